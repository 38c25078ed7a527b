"""qualys-cloud-agent.sh: the simulated agent's configuration tool.

It validates every Key=Value like the real tool (a bad one: a message, exit 1, nothing
changed), saves the settings, logs what it received and wakes the daemon with SIGHUP. On a
hostile-output Mac it prints HOSTILE_TEXT on stdout and stderr first, then does the same.
The hostid is not its job: the daemon writes it after reaching the platform.
"""
import grp
import os
import pwd
import re
import signal
import urllib.parse

from agentcommon import (CONFIG, DEFAULTS, HOSTILE, Invalid, daemon_pid, host_traits, int_in, key_values, log,
                         print_hostile, read_settings, require_root, write_atomic)

DEFAULT_SERVER_URI = "https://qagpublic.qg1.fleetlab.test/CloudAgent"
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def validate(key: str, value: str) -> None:
    def bad(expected: str) -> Invalid:
        return Invalid(f"Invalid value for {key}: '{value}' ({expected})")

    if key in ("ActivationId", "CustomerId"):
        if not UUID.match(value):
            raise bad("expected a UUID like 1a2b3c4d-0000-4000-8000-123456789abc")
    elif key == "ServerUri":
        uri = urllib.parse.urlsplit(value)
        if uri.scheme != "https" or not uri.hostname or not uri.path.rstrip("/").endswith("/CloudAgent"):
            raise bad("expected https://<platform>/CloudAgent")
    elif key == "LogLevel":
        if not int_in(value, 0, 5):
            raise bad("expected 0-5")
    elif key in ("LogFileDir", "HostIdSearchDir"):
        if not value.startswith("/"):
            raise bad("expected an absolute directory")
    elif key == "LogDestType":
        if value not in ("file", "syslog"):
            raise bad("expected file or syslog")
    elif key == "UseSudo":
        if value not in ("0", "1"):
            raise bad("expected 0 or 1")
    elif key == "SudoCommand":
        if not value.strip():
            raise bad("expected a command such as sudo or pbrun")
    elif key == "User":
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise bad("no such user on this Mac") from None
    elif key == "Group":
        try:
            grp.getgrnam(value)
        except KeyError:
            raise bad("no such group on this Mac; create it first") from None
    elif key == "CmdMaxTimeOut":
        if not int_in(value, 1, 10 ** 7):
            raise bad("expected a number of seconds")
    elif key == "ProcessPriority":
        if not int_in(value, -20, 19):
            raise bad("expected a nice value from -20 to 19")
    elif key == "QualysProxyOrder":
        if value not in ("sequential", "seq", "random"):
            raise bad("expected sequential, seq or random")
    else:
        raise Invalid(f"Invalid option: {key}")


def configure(args: list) -> None:
    """Validate, save, tell the daemon (SIGHUP). The hostid comes later, from the platform."""
    require_root("qualys-cloud-agent.sh")
    if HOSTILE in host_traits():  # persona hostile-output: garbage first, then the tool's usual work
        print_hostile()
    if not args:
        raise Invalid("Usage: qualys-cloud-agent.sh ActivationId=<uuid> CustomerId=<uuid> "
                      "[ServerUri=<url>/CloudAgent] [Option=Value ...]")
    changes = key_values(args, "qualys-cloud-agent.sh")
    for key, value in changes.items():
        validate(key, value)
    settings = {**read_settings(), **changes}
    provisioning = "ActivationId" in changes or "CustomerId" in changes
    if provisioning and not ("ActivationId" in settings and "CustomerId" in settings):
        raise Invalid("ActivationId and CustomerId are both required to provision the agent")
    settings.setdefault("ServerUri", DEFAULT_SERVER_URI)  # a package is built for one platform
    write_atomic(CONFIG, "".join(f"{k}={v}\n" for k, v in sorted(settings.items())), 0o600)
    config = {**DEFAULTS, **settings}
    if provisioning or "HostIdSearchDir" in changes:
        print(f"Setting permission for user: {config['User']}")
        print(f"Setting permission for group: {config['Group']}")
        print(f"hostid search path: {config['HostIdSearchDir'].rstrip('/') or '/'}")
    log("Information", "Options received: " + ", ".join(sorted(changes)), config)
    log("Debug", "Option values: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items())), config)
    pid = daemon_pid()
    if pid:
        os.kill(pid, signal.SIGHUP)
