"""`fleetctl status/doctor/logs`: read-only looks at the fleet."""
from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import click

from fleetctl.cli.common import cli, err, FILE, INVENTORY, LIMIT, out, prompt


STEP_TIMEOUT = click.option("--step-timeout", type=click.IntRange(10, 3600), default=120, show_default=True,
                            metavar="SECONDS", help="How long one Mac may take to answer before it is reported "
                            "as failed (a hung command, or a Mac that never stops writing).")
SINCE = click.option("--since", default="24h", show_default=True,
                     help="Look at the agent log from this long ago (24h, 30m, 2d) or this Mac-local time.")


@cli.command("status")
@INVENTORY
@LIMIT
@SINCE
@click.option("--forks", "-f", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@click.option("--json", "json_path", type=FILE, help="Write the status as JSON; '-' for stdout (the table then "
              "goes to stderr).")
@STEP_TIMEOUT
def status_cmd(inventory_path: Path, limit: str | None, since: str, forks: int, accept_new_hostkeys: bool,
               json_path: Path | None, step_timeout: int) -> None:
    """Which Macs are healthy right now: version, provisioned, daemon, last check-in, log errors.

    Read-only, one SSH round trip per Mac. Exit status 0 when every Mac with the agent is
    healthy, 3 otherwise.

    \b
    Example:
      fleetctl status -i inventory.yml --since 2h --json status.json
    """
    from fleetctl import status

    since_value = status.parse_since(since)
    hosts = status.select(inventory_path, limit)
    results = status.sweep(hosts, status.collect_secrets(hosts, prompt()), since_value, forks, accept_new_hostkeys,
                           step_timeout)
    status.show(out(json_path), results, since)
    if json_path:
        status.write_json(json_path, results, since)
    sys.exit(3 if any(r.health in ("unhealthy", "unreachable") for r in results) else 0)


@cli.command("doctor")
@INVENTORY
@LIMIT
@click.option("--forks", "-f", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@click.option("--json", "json_path", type=FILE, help="Write every finding as JSON; '-' for stdout.")
@click.option("--record", "record_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep every raw output, one folder per Mac, names and secrets replaced (docs/doctor-record.md).")
@STEP_TIMEOUT
def doctor_cmd(inventory_path: Path, limit: str | None, forks: int, accept_new_hostkeys: bool,
               json_path: Path | None, record_dir: Path | None, step_timeout: int) -> None:
    """Check, read-only, every assumption fleetctl makes on these Macs before a rollout.

    One SSH connection per Mac, nothing uploaded or written. Each assumption is ok, differs
    (with the output that did not match and what depends on it) or missing. Exit status 0
    when all hold on every Mac, 3 otherwise, 2 on bad input.

    \b
    Examples:
      fleetctl doctor -i inventory.yml --limit 'mac-00*'
      fleetctl doctor -i inventory.yml --limit pilot --record doctor-pilot/
    """
    from fleetctl import doctor, status

    hosts = status.select(inventory_path, limit)
    secrets = status.collect_secrets(hosts, prompt())
    found, results, plans = doctor.sweep(hosts, secrets, forks, accept_new_hostkeys, step_timeout)
    doctor.show(out(json_path), found, results)
    if json_path:
        doctor.write_json(json_path, found, results)
    if record_dir:
        doctor.record(record_dir, found, results, plans, secrets)
    sys.exit(doctor.exit_code(found, results))


@cli.command("logs")
@click.argument("hosts", nargs=-1, required=True)
@INVENTORY
@SINCE
@click.option("--level", default="Trace", show_default=True, help="Show this level and more severe "
              "(Fatal, Error, Warning, Information, Debug, Trace).")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@STEP_TIMEOUT
def logs_cmd(hosts: tuple[str, ...], inventory_path: Path, since: str, level: str, accept_new_hostkeys: bool,
             step_timeout: int) -> None:
    """Fetch and filter the agent log of HOSTS (names or patterns, like --limit).

    Only the tail of the log that reaches back to --since is read on the Mac (the log is
    time-ordered), and at most the newest 5,000 records are shown; lines over 2 KB are cut
    on the Mac, with how many bytes were cut.

    \b
    Example:
      fleetctl logs mac-017 -i inventory.yml --since 2h --level Warning
    """
    from fleetctl import status

    selected = status.select(inventory_path, ",".join(hosts))
    sys.exit(status.logs(selected, status.collect_secrets(selected, prompt()), status.parse_since(since), level,
                         accept_new_hostkeys, out(), step_timeout))


@cli.command("platform")
@INVENTORY
@LIMIT
@click.option("--forks", "-f", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@click.option("--json", "json_path", type=FILE, help="Write each Mac's view and flags as JSON; '-' for stdout.")
@click.option("--stale-after", default="2d", show_default=True, metavar="DURATION",
              help="Flag an agent whose last check-in is older than this (30m, 12h, 2d).")
@click.option("--scan-playbook", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Flag Macs whose agent lacks a module this scan playbook's scan type needs.")
@click.option("--needs-module", multiple=True, metavar="MODULE",
              help="Flag Macs whose agent lacks this module (e.g. AGENT_VM, AGENT_PC, AGENT_SCA); repeatable.")
@STEP_TIMEOUT
def platform_cmd(inventory_path: Path, limit: str | None, forks: int, accept_new_hostkeys: bool,
                 json_path: Path | None, stale_after: str, scan_playbook: Path | None, needs_module: tuple[str, ...],
                 step_timeout: int) -> None:
    """What the Qualys platform lists for each Mac's agent, beside what the Mac says.

    Each Mac is asked (read-only, one SSH connection) for its agent UUID (the hostid file);
    the Qualys API is asked for that agent and for other records with its name. Flags: not
    known to the platform, two records for one Mac, last check-in too old, a module not
    activated. The API user is the secrets qualys_api_user and qualys_api_password; the API
    server comes from server_uri, or the inventory variable qualys_api_url. Exit status 0
    when nothing is flagged, 3 otherwise.

    \b
    Example:
      fleetctl platform -i inventory.yml --scan-playbook playbooks/scan.yml --json platform.json
    """
    from fleetctl import platform, report, status
    from fleetctl.waves import parse_duration

    stale = parse_duration(stale_after, f"--stale-after {stale_after!r}", "--stale-after")
    needs = platform.needed_modules(scan_playbook, needs_module)
    hosts = status.select(inventory_path, limit)
    console = out(json_path)
    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True)) if report.verbosity >= 1 \
        else (lambda text: None)
    views = platform.sweep(hosts, status.collect_secrets(hosts, prompt()), forks, accept_new_hostkeys, step_timeout,
                           timedelta(seconds=stale), needs, say)
    platform.show(console, views)
    if json_path:
        platform.write_json(json_path, views)
    sys.exit(platform.exit_code(views))
