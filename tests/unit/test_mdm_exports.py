"""MDM exports: valid profile, scripts that parse, no secret unless asked for."""
from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLEETCTL = Path(sys.executable).with_name("fleetctl")
ACTIVATION = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
CUSTOMER = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"
URI = "https://qagpublic.qg2.apps.qualys.com/CloudAgent"


def export(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring", **env}
    return subprocess.run([str(FLEETCTL), "export", *args], capture_output=True, text=True, timeout=60,
                          env=environ, stdin=subprocess.DEVNULL)


def test_pppc_profile_grants_full_disk_access_to_the_agent():
    done = export("pppc", "--organization", "Example IT")
    profile = plistlib.loads(done.stdout.encode())
    assert profile["PayloadType"] == "Configuration" and profile["PayloadScope"] == "System"
    assert profile["PayloadOrganization"] == "Example IT"
    (tcc,) = profile["PayloadContent"]
    assert tcc["PayloadType"] == "com.apple.TCC.configuration-profile-policy"
    (rule,) = tcc["Services"]["SystemPolicyAllFiles"]
    assert (rule["Identifier"], rule["IdentifierType"], rule["Authorization"]) == \
        ("com.qualys.cloud-agent", "bundleID", "Allow")
    assert 'identifier "com.qualys.cloud-agent"' in rule["CodeRequirement"]
    assert rule["CodeRequirement"].endswith("certificate leaf[subject.OU] = CLRUMG7LZ6")
    assert export("pppc", "--organization", "Example IT").stdout == done.stdout  # stable UUIDs for the MDM
    assert len({profile["PayloadUUID"], tcc["PayloadUUID"]}) == 2


def test_av_exclusions_list_everything_the_guide_lists_and_the_log_directory(tmp_path):
    text = export("av-exclusions").stdout
    app, support = "/Applications/QualysCloudAgent.app", "/Library/Application Support/QualysCloudAgent"
    for path in ("/etc/qualys", app, f"{app}/Contents/Frameworks", f"{app}/Contents/Resources",
                 f"{app}/Contents/_CodeSignature", f"{app}/Contents/Info.plist", f"{app}/Contents/MacOS/*.sh",
                 f"{support}/Data", f"{support}/Data/*.db", f"{support}/Data/manifests/*.db", f"{support}/Config",
                 "/var/log/qualys", f"{app}/Contents/MacOS/qualys-cloud-agent"):
        assert f"\n{path}\n" in text, path
    book = tmp_path / "book.yml"
    book.write_text("name: b\naction: install\nagent:\n  LogFileDir: /Library/Logs/Qualys/\n  HostIdSearchDir: /opt/\n")
    doc = json.loads(export("av-exclusions", str(book), "--format", "json").stdout)
    assert "/Library/Logs/Qualys" in doc["directories"] and "/opt/qualys" in doc["directories"]
    assert "/var/log/qualys" not in doc["directories"] and doc["processes"] and f"{support}/Data/*.db" in doc["files"]


@pytest.mark.parametrize("flavour", ["intune", "jamf"])
def test_scripts_parse_and_hold_no_secret_unless_asked(tmp_path, flavour):
    out = tmp_path / f"{flavour}.sh"
    done = export(flavour, str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}", "-o", str(out),
                  FLEETCTL_ACTIVATION_ID=ACTIVATION, FLEETCTL_CUSTOMER_ID=CUSTOMER)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o755
    text = out.read_text()
    assert subprocess.run(["sh", "-n", str(out)]).returncode == 0
    assert ACTIVATION not in text and CUSTOMER not in text
    assert "/usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh" in text and "LogLevel=3" in text
    assert URI in text
    assert subprocess.run(["zsh", "-n", str(out)]).returncode == 0  # MDMs run it with /bin/zsh too
    marker = {"intune": "/Library/Logs/Microsoft/IntuneScripts/QualysCloudAgent/QualysCloudAgent.provisioned",
              "jamf": "/private/var/db/fleetctl/qualys-mdm.provisioned"}[flavour]
    assert f"MARKER={marker}\n" in text


def test_a_trailing_slash_is_accepted_by_export_script_and_run():
    """`.../CloudAgent/` is the form public Qualys commands use."""
    from fleetctl import agent

    assert agent.option_problem("ServerUri", URI + "/") is None
    for bad in (URI + "//", URI + "?x=1", URI + "/x", "http://x.example.com/CloudAgent/"):
        assert agent.option_problem("ServerUri", bad), bad
    done = export("intune", str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}/")
    assert done.returncode == 0 and f"SERVER_URI={URI}/\n" in done.stdout
    assert "https://*/CloudAgent | https://*/CloudAgent/) ;;" in done.stdout  # the script's own check


def test_jamf_without_server_uri_requires_parameter_6():
    done = export("jamf", str(ROOT / "playbooks/rollout.yml"))
    assert done.returncode == 0, done.stderr
    assert "DEFAULT_SERVER_URI=''" in done.stdout and "6 = ServerUri (required" in done.stdout
    assert 'fail "ServerUri is missing: set script parameter 6' in done.stdout


def test_intune_script_logs_and_keeps_a_marker_like_microsofts_scripts():
    text = export("intune", str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}").stdout
    assert "LOG_DIR=/Library/Logs/Microsoft/IntuneScripts/QualysCloudAgent\n" in text
    assert 'line="$(date) | $*"' in text and "Script frequency: Every 15 minutes" in text
    assert "shasum -a 256" in text and "pkgutil --pkg-info com.qualys.cloud-agent" in text


def test_intune_embeds_secrets_only_when_asked_and_quotes_them(tmp_path):
    done = export("intune", str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}", "--embed-secrets",
                  FLEETCTL_ACTIVATION_ID=ACTIVATION, FLEETCTL_CUSTOMER_ID=CUSTOMER)
    assert done.returncode == 0, done.stderr
    assert f"ACTIVATION_ID={ACTIVATION}\n" in done.stdout and f"CUSTOMER_ID={CUSTOMER}\n" in done.stdout
    assert ACTIVATION not in done.stderr


def test_a_proxy_goes_into_the_script_and_credentials_need_the_flag(tmp_path):
    proxy = ["-e", "proxy_urls=https://proxy.example.com:3128"]
    done = export("intune", str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}", *proxy)
    assert done.returncode == 0, done.stderr
    assert "qualys_https_proxy=https://proxy.example.com:3128" in done.stdout and "chmod 660" in done.stdout
    done = export("intune", str(ROOT / "playbooks/rollout.yml"), "-e", f"server_uri={URI}", *proxy,
                  "-e", "proxy_user=svc", "-e", "proxy_password_secret=proxy_pw")
    assert done.returncode == 2 and "--embed-secrets" in done.stderr


@pytest.mark.parametrize("args, words", [
    (["intune", "playbooks/rollout.yml"], "server_uri is not set"),
    (["intune", "playbooks/rollout.yml", "-e", "server_uri=http://x/CloudAgent"], "server_uri"),
    (["jamf", "playbooks/rollout.yml", "--embed-secrets"], "No such option"),
])
def test_bad_exports_are_refused(args, words):
    done = export(*[str(ROOT / a) if a.startswith("playbooks/") else a for a in args])
    assert done.returncode == 2 and words in done.stderr, done.stderr
