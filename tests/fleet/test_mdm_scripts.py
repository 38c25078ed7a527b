"""The exported MDM scripts provision a real (simulated) Mac the way Intune and Jamf run them."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import ACTIVATION, CUSTOMER, FLEETCTL, Lab

ROOT = Path(__file__).resolve().parents[2]


def _export(lab: Lab, tmp_path: Path, flavour: str, *args: str) -> Path:
    out = tmp_path / f"{flavour}.sh"
    env = {**os.environ, "FLEETCTL_ACTIVATION_ID": ACTIVATION, "FLEETCTL_CUSTOMER_ID": CUSTOMER}
    uri = lab.inventory["all"]["vars"]["server_uri"]
    done = subprocess.run([str(FLEETCTL), "export", flavour, str(ROOT / "playbooks/rollout.yml"), "-e",
                           f"server_uri={uri}", "-o", str(out), *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return out


def test_intune_script_provisions_at_the_app_path(lab: Lab, tmp_path):
    mac = lab.mac("mac-023")
    script = _export(lab, tmp_path, "intune", "--embed-secrets")
    mac.put(script, "/private/var/tmp/qualys-intune.sh")
    refused = mac.run("sh /private/var/tmp/qualys-intune.sh")  # Intune runs it as root; a user gets a clear no
    assert refused.returncode == 1 and "run me as root" in refused.stderr
    mac.install()
    out = mac.ok("sudo sh /private/var/tmp/qualys-intune.sh")
    assert "done with /Applications/QualysCloudAgent.app/Contents/MacOS/qualys-cloud-agent.sh" in out
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
    assert lab.wait_checkin(hostid)["customer_id"] == CUSTOMER


def test_jamf_script_takes_parameters_and_finds_the_legacy_tool(lab: Lab, tmp_path):
    mac = lab.mac("mac-024")  # Intel: the package also installs the /usr/local/qualys tool path
    script = _export(lab, tmp_path, "jamf")
    mac.put(script, "/private/var/tmp/qualys-jamf.sh")
    mac.install()
    missing = mac.run("sudo sh /private/var/tmp/qualys-jamf.sh / mac-024 admin")
    assert missing.returncode == 1 and "ActivationId is missing or not a UUID (script parameter 4)" in missing.stderr
    assert mac.run("test -s /etc/qualys/hostid").returncode != 0  # nothing provisioned
    out = mac.ok(f"sudo sh /private/var/tmp/qualys-jamf.sh / mac-024 admin {ACTIVATION} {CUSTOMER}")
    assert "done with /usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh" in out
    hostid = mac.ok("cat /etc/qualys/hostid").strip()
    assert lab.wait_checkin(hostid)["customer_id"] == CUSTOMER
