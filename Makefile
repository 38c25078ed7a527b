# Set-up and entry points. Everything here runs as root on Debian: the lab needs namespaces.
APT_PACKAGES := openssh-server sudo tinyproxy curl python3 iproute2 openssl chromium fonts-liberation zsh
VENV := .venv
PY := $(VENV)/bin/python

BENCH_VENV := .venv-bench
PEERS := ansible-core==2.19.14 pyinfra==3.10.0

.PHONY: install test unit fleet demo bench lab-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
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

# Restarts the demo lab from scratch, rolls the agent out and shows the report. Some Macs are
# built to fail (low disk, a failing installer), so the run exits 3; the demo accepts that.
DEMO_SECRETS = FLEETCTL_ACTIVATION_ID=4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11 \
	FLEETCTL_CUSTOMER_ID=8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22 \
	FLEETCTL_LAB_SUDO_PASSWORD="$$(cat .fleetlab/sudo-password)" \
	FLEETCTL_LAB_PROXY_PASSWORD="$$(cat .fleetlab/proxy-password)" \
	FLEETCTL_QUALYS_API_USER=flab_api1 FLEETCTL_QUALYS_API_PASSWORD="$$(cat .fleetlab/api-password)"
demo: install
	@if [ -d .fleetlab ]; then $(VENV)/bin/fleetctl lab down || true; fi
	$(VENV)/bin/fleetctl lab up --hosts 8 --personas "x86_64*2,sudo-password,lowdisk,installer-fails,proxy-only,duplicate-record"
	$(DEMO_SECRETS) $(VENV)/bin/fleetctl run playbooks/rollout.yml -i .fleetlab/inventory.yml \
		--json .fleetlab/report.json --html .fleetlab/report.html || test $$? -eq 3
	@echo "What the (simulated) Qualys platform lists for each Mac:"
	$(DEMO_SECRETS) $(VENV)/bin/fleetctl platform -i .fleetlab/inventory.yml -q || test $$? -eq 3
	@echo "Reports: .fleetlab/report.json, .fleetlab/report.html (open it in a browser)."
	@echo "Run it again to see every healthy Mac 'ok' with nothing uploaded."

# The peers live in their own venv: pyinfra pins an older paramiko than fleetctl uses.
$(BENCH_VENV)/.installed:
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q $(PEERS)
	touch $@

bench: install $(BENCH_VENV)/.installed
	$(PY) -m bench.rollout --hosts 50 --pkg-mb 40 --peers-bin $(BENCH_VENV)/bin --json bench/last-run.json

lab-down:
	-$(VENV)/bin/fleetctl lab down

clean: lab-down
	rm -rf $(VENV) $(BENCH_VENV) .fleetlab
