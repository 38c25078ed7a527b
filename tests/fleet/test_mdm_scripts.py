"""The exported MDM scripts provision a real (simulated) Mac the way Intune and Jamf run them:
as root, under /bin/zsh and /bin/sh, again and again on a schedule. The first run provisions,
the next changes nothing, a failed one is retried; ServerUri may end in a slash."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from conftest import ACTIVATION, CUSTOMER, FLEETCTL, HOSTID, Lab, Mac

ROOT = Path(__file__).resolve().parents[2]
TOOL = "qualys-cloud-agent.sh"  # the configuration tool's invocations, as the simulated Mac counts them
INTUNE_DIR = "/Library/Logs/Microsoft/IntuneScripts/QualysCloudAgent"
INTUNE_MARKER = f"{INTUNE_DIR}/QualysCloudAgent.provisioned"
JAMF_MARKER = "/private/var/db/fleetctl/qualys-mdm.provisioned"


def _export(tmp_path: Path, flavour: str, name: str, *args: str,
            playbook: Path = ROOT / "playbooks/rollout.yml") -> Path:
    out = tmp_path / name
    env = {**os.environ, "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER}
    done = subprocess.run([str(FLEETCTL), "export", flavour, str(playbook), "-o", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return out


def _run(mac: Mac, shell: str, script: str, *params: str) -> subprocess.CompletedProcess:
    """As the MDM runs it: root, the given shell, the script's parameters (Jamf)."""
    return mac.run(" ".join(["sudo", shell, script, *map(shlex.quote, params)]), timeout=120)


def _twice(lab: Lab, mac: Mac, shell: str, script: str, marker: str, *params: str) -> str:
    """Run SCRIPT twice: the first provisions (the tool runs once, the Mac reaches the platform),
    the second changes nothing (no tool run, same marker). Returns the first run's output."""
    before = mac.count(TOOL)
    first = _run(mac, shell, script, *params)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "qualys provisioning: done with" in first.stdout and mac.count(TOOL) == before + 1
    hostid = mac.wait_hostid(HOSTID, timeout=30)  # written after the first contact, not by the tool
    assert lab.wait_checkin(hostid, timeout=30)["customer_id"] == CUSTOMER
    stamp = mac.ok(f"sudo cat {marker}")
    second = _run(mac, shell, script, *params)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Already provisioned with these settings" in second.stdout and "done with" not in second.stdout
    assert mac.count(TOOL) == before + 1 and mac.ok(f"sudo cat {marker}") == stamp
    return first.stdout


def test_intune_script_on_its_schedule(lab: Lab, tmp_path):
    mac = lab.mac("mac-023")
    uri = lab.inventory["all"]["vars"]["server_uri"]
    plain = _export(tmp_path, "intune", "intune.sh", "-e", f"server_uri={uri}", "--embed-secrets")
    slash = _export(tmp_path, "intune", "intune-slash.sh", "-e", f"server_uri={uri}/", "--embed-secrets")
    broken = tmp_path / "broken.yml"  # the tool refuses a user that does not exist on the Mac
    broken.write_text("name: broken\naction: install\nagent:\n  User: nosuchuser\n")
    bad = _export(tmp_path, "intune", "intune-bad.sh", "-e", f"server_uri={uri}", "--embed-secrets", playbook=broken)
    for script in (plain, slash, bad):
        mac.put(script, f"/private/var/tmp/{script.name}")
    refused = mac.run("/bin/sh /private/var/tmp/intune.sh")  # Intune runs it as root; a user gets a clear no
    assert refused.returncode == 1 and "run me as root" in refused.stderr

    mac.install()
    out = _twice(lab, mac, "/bin/zsh", "/private/var/tmp/intune.sh", INTUNE_MARKER)
    assert "done with /Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent.sh" in out
    _twice(lab, mac, "/bin/sh", "/private/var/tmp/intune-slash.sh", INTUNE_MARKER)  # new settings: provisions again

    failed = _run(mac, "/bin/sh", "/private/var/tmp/intune-bad.sh")
    assert failed.returncode == 1 and "the configuration tool failed (exit 1)" in failed.stderr
    assert mac.run(f"sudo test -e {INTUNE_MARKER}").returncode == 1  # so the next scheduled run tries again
    before = mac.count(TOOL)
    again = _run(mac, "/bin/zsh", "/private/var/tmp/intune.sh")
    assert again.returncode == 0 and "done with" in again.stdout and mac.count(TOOL) == before + 1

    log = mac.ok(f"sudo cat {INTUNE_DIR}/QualysCloudAgent.log").splitlines()
    assert sum("| qualys provisioning: done with" in line for line in log) == 3
    assert sum("Already provisioned" in line for line in log) == 2
    assert any("qualys provisioning failed: the configuration tool failed" in line for line in log)
    assert all(" | " in line for line in log if "provisioning" in line)  # `date` | message, as Microsoft's scripts
    assert "Setting permission for user: root" in log  # the tool's own words are kept too
    assert ACTIVATION not in "\n".join(log) and CUSTOMER not in "\n".join(log)


def test_jamf_script_takes_parameters_and_finds_the_legacy_tool(lab: Lab, tmp_path):
    mac = lab.mac("mac-024")  # Intel: the package also installs the /usr/local/qualys tool path
    uri = lab.inventory["all"]["vars"]["server_uri"]
    script = _export(tmp_path, "jamf", "jamf.sh")  # no server_uri at export: parameter 6 is required
    mac.put(script, "/private/var/tmp/qualys-jamf.sh")
    mac.install()
    before = mac.count(TOOL)
    missing = _run(mac, "/bin/sh", "/private/var/tmp/qualys-jamf.sh", "/", "mac-024", "admin")
    assert missing.returncode == 1 and "ActivationId is missing or not a UUID (script parameter 4)" in missing.stderr
    no_uri = _run(mac, "/bin/zsh", "/private/var/tmp/qualys-jamf.sh", "/", "mac-024", "admin", ACTIVATION, CUSTOMER)
    assert no_uri.returncode == 1 and "ServerUri is missing: set script parameter 6" in no_uri.stderr
    assert mac.count(TOOL) == before and mac.run(f"test -s {HOSTID}").returncode != 0  # nothing provisioned

    args = ("/", "mac-024", "admin", ACTIVATION, CUSTOMER)
    out = _twice(lab, mac, "/bin/zsh", "/private/var/tmp/qualys-jamf.sh", JAMF_MARKER, *args, uri)
    assert "done with /usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh" in out
    _twice(lab, mac, "/bin/sh", "/private/var/tmp/qualys-jamf.sh", JAMF_MARKER, *args, uri + "/")


def test_fleetctl_run_takes_the_trailing_slash_too(lab: Lab, tmp_path):
    """The same ServerUri the scripts accept, through plan, preflight and the tool on the Mac."""
    uri = lab.inventory["all"]["vars"]["server_uri"] + "/"
    env = {**os.environ, "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER,
           "FLEETCTL_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    done = subprocess.run([str(FLEETCTL), "run", str(ROOT / "playbooks/rollout.yml"), "-i",
                           str(lab.dir / "inventory.yml"), "--limit", "mac-023", "-e", f"server_uri={uri}",
                           "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    (host,) = json.loads((tmp_path / "r.json").read_text())["hosts"]
    assert host["name"] == "mac-023" and host["status"] in ("changed", "ok"), host
