"""fleetctl doctor on simulated Macs: read-only, every assumption judged, what it saw recorded."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import FLEETCTL, Lab, lab_env

ROOT = Path(__file__).resolve().parents[2]
PASSING = ["mac-041", "mac-042", "mac-043", "mac-044", "mac-045", "mac-046"]  # see conftest.PERSONAS
DIFFERING = {  # Mac -> (assumption, words of the excerpt)
    "mac-037": ("sw_vers", "ProductVersionExtra:\t(a)"),
    "mac-038": ("agent log format", "qualys-cloud-agent["),
    "mac-039": ("clock", "ahead of the controller's"),
    "mac-040": ("openssl", "command -v openssl: not found"),
}
UNCHANGED = ["installer", "qualys-cloud-agent.sh", "qagent_uninstall.sh", "cloudagentctl.sh", "string-util"]


def counts(lab: Lab, name: str) -> dict[str, str]:
    """The shims' invocation counters, read from the Mac's tree on the controller (bastion Macs too)."""
    folder = lab.dir / "hosts" / name / "root/private/var/fleetlab/counts"
    return {c: (folder / c).read_text() if (folder / c).exists() else "0" for c in UNCHANGED}


def written(lab: Lab, name: str) -> dict[str, float]:
    """Every file of the Mac's own tree, with its modification time (the lab's counters aside)."""
    root = lab.dir / "hosts" / name / "root"
    return {str(p): p.stat().st_mtime for p in root.rglob("*")
            if p.is_file() and "fleetlab/counts" not in str(p) and "fleetlab/unified-log" not in str(p)
            and p.name != ".sudo_as_admin_successful"}  # Debian's sudo writes it on every sudo; macOS's does not


def doctor(lab: Lab, limit: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = lab.dir / "doctor.json"
    done = subprocess.run([str(FLEETCTL), "doctor", "-i", str(lab.dir / "inventory.yml"), "--limit", limit,
                           "--json", str(out), *args], capture_output=True, text=True, timeout=300, env=lab_env(lab.dir))
    return done, {h["name"]: h for h in json.loads(out.read_text())["hosts"]}


def test_doctor_passes_where_fleetctl_works_and_names_every_difference(lab: Lab, tmp_path):
    subprocess.run([str(FLEETCTL), "run", str(ROOT / "playbooks/rollout.yml"), "-i", str(lab.dir / "inventory.yml"),
                    "--limit", "mac-038,mac-041,mac-044"], capture_output=True, text=True, timeout=300, env=lab_env(lab.dir), check=True)
    names = PASSING + sorted(DIFFERING)
    before = {n: counts(lab, n) for n in names}
    files = {n: written(lab, n) for n in names}
    record = tmp_path / "record"
    done, hosts = doctor(lab, ",".join(names), "--record", str(record))
    assert done.returncode == 3, done.stdout + done.stderr
    for name in PASSING:
        problems = [f for f in hosts[name]["findings"] if f["verdict"] != "ok"]
        assert hosts[name]["status"] == "ok" and not problems, (name, problems)
    for name, (assumption, words) in DIFFERING.items():
        found = {f["name"]: f for f in hosts[name]["findings"]}
        assert found[assumption]["verdict"] in ("differs", "missing") and words in found[assumption]["excerpt"], \
            (name, found[assumption])
        assert found[assumption]["feature"]
        others = [f["name"] for f in hosts[name]["findings"]  # only that assumption (and what uses it) differs
                  if f["verdict"] != "ok" and not f["name"].startswith(assumption)]
        assert others == [], (name, others)
    assert f"{len(PASSING)} Macs: all assumptions hold" in done.stdout
    for name in names:  # read-only: no installer, no configuration tool, no file written
        assert counts(lab, name) == before[name], name
        assert written(lab, name) == files[name], name

    recorded = "".join(p.read_text() for p in record.rglob("*") if p.is_file())
    secrets = [lab_env(lab.dir)["FLEETCTL_LAB_SUDO_PASSWORD"], lab.proxy_password()]
    for leak in [*names, "admin", "198.18.", *secrets, *(lab.mac(n).address for n in names)]:
        assert leak not in recorded, leak
    assert {p.name for p in record.iterdir()} == {f"mac-{i}" for i in range(1, len(names) + 1)}
    for folder in record.iterdir():
        meta = json.loads((folder / "meta.json").read_text())
        assert (folder / "probe.out").exists() and (folder / "doctor-user.out").exists() and meta["verdicts"]
