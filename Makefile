# Set-up and entry points. Everything here runs as root on Debian: the lab needs namespaces.
APT_PACKAGES := openssh-server sudo tinyproxy curl python3 iproute2 openssl
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install test unit fleet demo lab-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(VENV)/bin/pytest -q

unit: install
	$(VENV)/bin/pytest -q tests/unit

fleet: install
	$(VENV)/bin/pytest -q tests/fleet

# Restarts the demo lab from scratch, so it can be run again and again.
demo: install
	-@$(VENV)/bin/fleetctl lab down 2>/dev/null
	$(VENV)/bin/fleetctl lab up --hosts 8 --personas "x86_64*2,sudo-password,lowdisk,installer-fails,proxy-only"

lab-down:
	-$(VENV)/bin/fleetctl lab down

clean: lab-down
	rm -rf $(VENV) .fleetlab
