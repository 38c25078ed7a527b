"""Exports for Macs an MDM manages instead of SSH: the provisioning script (Intune, Jamf), the
Full Disk Access profile (PPPC) and the anti-virus exclusions, from the same playbook."""
from __future__ import annotations

import json
import os
import plistlib
import uuid
from pathlib import Path
from typing import Any, Callable

from fleetctl import __version__, agent, playbook, render
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.plan import Planner
from fleetctl.secrets import Secrets

TEAM_ID = "CLRUMG7LZ6"
DAEMON = f"{agent.APP_BIN}/qualys-cloud-agent"
# Apple's designated requirement for a Developer ID app of that team.
CODE_REQUIREMENT = (f'identifier "{agent.PACKAGE_ID}" and anchor apple generic and '
                    "certificate 1[field.1.2.840.113635.100.6.2.6] /* exists */ and "
                    "certificate leaf[field.1.2.840.113635.100.6.1.13] /* exists */ and "
                    f"certificate leaf[subject.OU] = {TEAM_ID}")
SUPPORT = "/Library/Application Support/QualysCloudAgent"
# What the guide says the agent owns (spec: "Files and directories the agent owns"), for anti-virus
# and EDR exclusions; the hostid and log directories follow the playbook's options.
AV_APP_DIRECTORIES = (agent.APP, f"{agent.APP}/Contents/Frameworks", f"{agent.APP}/Contents/Resources",
                      f"{agent.APP}/Contents/_CodeSignature", SUPPORT, f"{SUPPORT}/Data", f"{SUPPORT}/Data/manifests",
                      agent.CONFIG_DIR)
AV_FILES = (f"{agent.APP}/Contents/Info.plist", f"{agent.APP_BIN}/*.sh", f"{SUPPORT}/Data/*.db",
            f"{SUPPORT}/Data/manifests/*.db")
AV_PROCESSES = (DAEMON,)  # the daemon, `qualys-cloud-agent`
WAIT_FOR_TOOL_S = 600
INTUNE_LOG_DIR = "/Library/Logs/Microsoft/IntuneScripts/QualysCloudAgent"  # where Microsoft's macOS scripts log
MARKERS = {"intune": f"{INTUNE_LOG_DIR}/QualysCloudAgent.provisioned",
           "jamf": "/private/var/db/fleetctl/qualys-mdm.provisioned"}
NAMESPACE = uuid.UUID("5b0a7c1e-3f6d-4c8e-9a2b-1d4e6f8a0c3b")  # stable payload UUIDs: MDMs track them


def script(flavour: str, playbook_path: Path, extra: dict[str, Any], embed: bool,
           prompt: Callable[[str], str] | None) -> str:
    """The provisioning script for FLAVOUR (intune or jamf); secrets only with EMBED (intune).
    Jamf without server_uri: the script then requires it as parameter 6."""
    book = playbook.load(playbook_path)
    variables = {**book.vars, **extra}
    server_uri = str(variables.get("server_uri") or "")
    if server_uri and agent.option_problem("ServerUri", server_uri):
        raise UsageError(f"server_uri: {agent.option_problem('ServerUri', server_uri)}")
    if flavour == "intune" and not server_uri:
        raise UsageError("server_uri is not set: put it in the playbook's vars or pass -e server_uri=https://.../CloudAgent")
    secrets = Secrets(prompt) if embed else None
    proxy_content = None
    if variables.get("proxy_urls"):
        pseudo = Host("mdm-export", variables, [], 1, playbook_path)
        proxy, _ = Planner(book, secrets).proxy(pseudo, variables)
        if proxy and not embed and any(s.user is not None for s in proxy.servers):
            raise UsageError("the proxy has credentials: export with --embed-secrets (Intune), or use a proxy "
                             "without them for MDM-managed Macs")
        proxy_content = proxy.file_content() if proxy else None
    values = {"activation_id": "", "customer_id": ""}
    if secrets:
        values = {"activation_id": secrets.get("activation_id", "Qualys ActivationId"),
                  "customer_id": secrets.get("customer_id", "Qualys CustomerId")}
        for key, value in zip(agent.SECRET_OPTIONS, values.values()):
            if agent.option_problem(key, value):
                raise UsageError(f"secret {key.replace('Id', '_id').lower()}: {key} must be a UUID (not shown)")
    return render.render(
        "mdm-provision", flavour=flavour, version=__version__, playbook=playbook_path.name, server_uri=server_uri,
        embedded=embed, tool_paths=agent.TOOL_PATHS, wait_s=WAIT_FOR_TOOL_S, proxy_content=proxy_content,
        config_dir=agent.CONFIG_DIR, proxy_file=agent.PROXY_FILE, package_id=agent.PACKAGE_ID,
        marker=MARKERS[flavour], log_dir=INTUNE_LOG_DIR, options=[f"{k}={v}" for k, v in book.options.items()],
        **values)


def pppc(organization: str) -> bytes:
    """A configuration profile granting the agent Full Disk Access (macOS 11+ 'Authorization')."""
    def uid(name: str) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{organization}/{name}")).upper()

    payload = {
        "PayloadType": "com.apple.TCC.configuration-profile-policy",
        "PayloadIdentifier": "com.fleetctl.qualys-cloud-agent.pppc.tcc",
        "PayloadUUID": uid("tcc"),
        "PayloadVersion": 1,
        "PayloadDisplayName": "Privacy Preferences Policy Control",
        "Services": {"SystemPolicyAllFiles": [{
            "Identifier": agent.PACKAGE_ID,
            "IdentifierType": "bundleID",
            "CodeRequirement": CODE_REQUIREMENT,
            "StaticCode": False,
            "Authorization": "Allow",
            "Comment": "Qualys Cloud Agent needs Full Disk Access to assess the Mac",
        }]},
    }
    profile = {
        "PayloadContent": [payload],
        "PayloadDisplayName": "Qualys Cloud Agent: Full Disk Access",
        "PayloadDescription": f"Grants {agent.PACKAGE_ID} (team {TEAM_ID}) Full Disk Access. Made by fleetctl.",
        "PayloadIdentifier": "com.fleetctl.qualys-cloud-agent.pppc",
        "PayloadOrganization": organization,
        "PayloadScope": "System",
        "PayloadType": "Configuration",
        "PayloadUUID": uid("profile"),
        "PayloadVersion": 1,
        "PayloadRemovalDisallowed": True,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


def av_exclusions(fmt: str, playbook_path: Path | None = None) -> str:
    """Everything the guide lists for exclusions, plus the log directory the agent writes to
    (LogFileDir, default /var/log/qualys) and the hostid directory (HostIdSearchDir + qualys)."""
    options = playbook.load(playbook_path).options if playbook_path else {}
    paths = agent.Paths().with_options({k: str(v) for k, v in options.items()})
    directories = [os.path.dirname(paths.hostid_file), *AV_APP_DIRECTORIES, paths.log_dir.rstrip("/") or "/"]
    if fmt == "json":
        return json.dumps({"directories": directories, "files": list(AV_FILES), "processes": list(AV_PROCESSES)},
                          indent=1) + "\n"
    lines = ["# Qualys Cloud Agent: anti-virus / EDR exclusions (directories, with everything below them)"]
    lines += directories
    lines += ["", "# files (* as in the guide: every matching file)"] + list(AV_FILES)
    lines += ["", "# processes"] + list(AV_PROCESSES)
    return "\n".join(lines) + "\n"
