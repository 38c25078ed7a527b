"""`fleetctl export ...`: scripts and profiles for MDM-managed Macs."""
from __future__ import annotations

from pathlib import Path

import click

from fleetctl.cli.common import cli, err, EXTRA, FILE, PLAYBOOK, prompt


@cli.group("export")
def export() -> None:
    """Scripts and profiles for Macs an MDM manages (Intune, Jamf), from the same playbook.

    Secrets are never written into an export unless --embed-secrets asks for it.
    """


OUT = click.option("-o", "--out", type=FILE, help="Write to FILE (scripts get mode 755) instead of stdout.")


def _emit(data: str | bytes, out: Path | None, executable: bool = False) -> None:
    from fleetctl import outfile

    if outfile.write(out, data, 0o755 if executable else 0o644):
        err.print(f"wrote {out}", markup=False, highlight=False)


@export.command("intune")
@PLAYBOOK
@EXTRA
@click.option("--embed-secrets", is_flag=True, help="Write ActivationId, CustomerId (and proxy credentials) into "
              "the script, from $FLEETCTL_*, the keyring or a prompt. Intune scripts take no parameters.")
@OUT
def export_intune(playbook_path: Path, extra: tuple[str, ...], embed_secrets: bool, out: Path | None) -> None:
    """A shell script for Intune (run as root, once) that provisions the agent at either tool path.

    \b
    Example:
      fleetctl export intune playbooks/rollout.yml -e server_uri=https://qagpublic.qg2.apps.qualys.com/CloudAgent \\
        --embed-secrets -o qualys-provision.sh
    """
    from fleetctl import mdm, rollout

    _emit(mdm.script("intune", playbook_path, rollout.parse_extra_vars(extra), embed_secrets, prompt()), out, True)


@export.command("jamf")
@PLAYBOOK
@EXTRA
@OUT
def export_jamf(playbook_path: Path, extra: tuple[str, ...], out: Path | None) -> None:
    """A Jamf policy script: parameters 4-6 are ActivationId, CustomerId and ServerUri.

    ServerUri (parameter 6) defaults to the playbook's server_uri (or -e server_uri=...); without
    one, the script requires parameter 6 and says so.

    \b
    Example:
      fleetctl export jamf playbooks/rollout.yml -o qualys-provision-jamf.sh
    """
    from fleetctl import mdm, rollout

    _emit(mdm.script("jamf", playbook_path, rollout.parse_extra_vars(extra), False, None), out, True)


@export.command("pppc")
@click.option("--organization", default="fleetctl", show_default=True, help="PayloadOrganization of the profile.")
@OUT
def export_pppc(organization: str, out: Path | None) -> None:
    """A .mobileconfig granting the agent Full Disk Access (bundle com.qualys.cloud-agent, team CLRUMG7LZ6).

    \b
    Example:
      fleetctl export pppc --organization "Example Corp IT" -o qualys-fda.mobileconfig
    """
    from fleetctl import mdm

    _emit(mdm.pppc(organization), out)


@export.command("av-exclusions")
@click.argument("playbook_path", metavar="[PLAYBOOK]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@OUT
def export_av(playbook_path: Path | None, fmt: str, out: Path | None) -> None:
    """The agent's directories, files and process, to exclude from anti-virus / EDR scanning.

    With PLAYBOOK, its LogFileDir and HostIdSearchDir replace the default log and hostid directories.

    \b
    Example:
      fleetctl export av-exclusions playbooks/rollout.yml --format json
    """
    from fleetctl import mdm

    _emit(mdm.av_exclusions(fmt, playbook_path), out)
