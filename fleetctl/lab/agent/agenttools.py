"""The agent's other tools: qagent_upgrade.sh, qagent_restart.sh, qagent_uninstall.sh and
cloudagentctl.sh (queues an on-demand scan for the daemon, agentdaemon.py, to run; on a
hostile-output Mac it queues nothing and drips output until its session goes, see drip).
"""
import json
import os
import signal
import sys
import time

from agentcommon import (APP, CONTENTS, DATA, HOSTILE, LEGACY, ONDEMAND, PLIST, SCAN_TYPES, SUPPORT, Invalid,
                         daemon_pid, host_traits, int_in, key_values, print_hostile, require_root, set_process_name,
                         write_atomic)

DRIP_EVERY_S = 0.2
DRIP_FOR_S = 1800  # a hung tool on a real Mac may never stop; this one stops after 30 minutes


def upgrade(args: list) -> None:
    require_root("qagent_upgrade.sh")
    import subprocess  # here, not at the top: cloudagentctl.sh and the configuration tool never need it

    if len(args) != 1 or not os.path.isfile(args[0]):
        raise Invalid("Usage: qagent_upgrade.sh <path to new QualysCloudAgent.pkg>")
    done = subprocess.run(["/usr/local/bin/installer", "-pkg", args[0], "-target", "/"])
    sys.exit(done.returncode)


def restart(args: list) -> None:
    require_root("qagent_restart.sh")
    import subprocess

    subprocess.run(["/usr/local/bin/launchctl", "unload", PLIST], stderr=subprocess.DEVNULL)
    done = subprocess.run(["/usr/local/bin/launchctl", "load", PLIST])
    if done.returncode == 0:
        print("Qualys Cloud Agent restarted")
    sys.exit(done.returncode)


def uninstall(args: list) -> None:
    """Stop the daemon, remove the agent and its receipt. The hostid stays: it is also the
    Agentless Tracking file, and the guide does not say uninstall removes it."""
    require_root("qagent_uninstall.sh")
    import subprocess

    subprocess.run(["/usr/local/bin/launchctl", "unload", PLIST], stderr=subprocess.DEVNULL)
    try:
        os.unlink(PLIST)
    except FileNotFoundError:
        pass
    subprocess.run(["rm", "-rf", APP, SUPPORT, LEGACY])
    subprocess.run(["/usr/local/bin/pkgutil", "--forget", "com.qualys.cloud-agent"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print("Qualys Cloud Agent uninstalled successfully")


def ctl(args: list) -> None:
    """Queue an on-demand scan and return at once; refused when the module has no manifest."""
    require_root("cloudagentctl.sh")
    usage = "Usage: cloudagentctl.sh action=demand type=<vm|pc|inv|udc|sca|vmpc> [cputhrottle=0..1000]"
    values = key_values(args, "cloudagentctl.sh")
    unknown = set(values) - {"action", "type", "cputhrottle"}
    if unknown or values.get("action") != "demand" or values.get("type") not in SCAN_TYPES:
        raise Invalid(usage)
    throttle = values.get("cputhrottle", "0")
    if not int_in(throttle, 0, 1000):
        raise Invalid(f"Invalid cputhrottle '{throttle}': expected 0..1000\n{usage}")
    if HOSTILE in host_traits():
        drip(args)
    pid = daemon_pid()
    if not pid:
        raise Invalid("cloudagentctl.sh: the qualys-cloud-agent daemon is not running")
    for module in SCAN_TYPES[values["type"]]:
        if not os.path.exists(f"{DATA}/manifests/{module}.db"):
            raise Invalid(f"Manifest not found for module {module.upper()}: "
                          "the agent is not activated for this module")
    os.makedirs(ONDEMAND, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d%H%M%S"), 0
    while os.path.exists(f"{ONDEMAND}/{stamp}.{n}.json"):
        n += 1
    control_id = f"{stamp}.{n}"
    write_atomic(f"{ONDEMAND}/{control_id}.json",
                 json.dumps({"control_id": control_id, "type": values["type"], "cputhrottle": int(throttle)}), 0o600)
    os.kill(pid, signal.SIGHUP)
    print(f"On-Demand-Request ControlId: {control_id}")


def drip(args: list) -> None:
    """Persona hostile-output: HOSTILE_TEXT, then a short chunk every DRIP_EVERY_S, never a
    newline, never closing stdout; no scan is queued. It dies with its SSH session like a
    shell script would: SIGHUP and SIGPIPE kill it (whatever it inherited), a write error
    (EPIPE, or EIO from a hung-up pty) ends it; and after DRIP_FOR_S it gives up (exit 1)."""
    for sig in (signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    set_process_name(["/bin/sh", CONTENTS + "/MacOS/cloudagentctl.sh", *args], "cloudagentctl.sh")
    try:
        print_hostile()
        out = sys.stdout.buffer
        for n in range(int(DRIP_FOR_S / DRIP_EVERY_S)):
            out.write(b"\x1b[2K\rWaiting for scan engine (%d)" % n)
            out.flush()
            time.sleep(DRIP_EVERY_S)
    except OSError:
        os._exit(141)
    os._exit(1)
