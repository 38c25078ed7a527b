"""`fleetctl plan/run/resume/runs/report`: rollouts and their reports."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fleetctl.cli.common import cli, EXTRA, HTML, INVENTORY, JSON, JUNIT, LIMIT, out, outputs, PLAYBOOK, prompt
from fleetctl.terminal import Console


@cli.command("plan")
@PLAYBOOK
@INVENTORY
@LIMIT
@EXTRA
def plan_cmd(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...]) -> None:
    """Show the scripts each Mac would run, without connecting; secrets appear as placeholders.

    \b
    Example:
      fleetctl plan playbooks/rollout.yml -i .fleetlab/inventory.yml
    """
    from fleetctl import rollout

    rollout.show_plan(playbook_path, inventory_path, limit, extra, Console(soft_wrap=True))


NO_RELAY = click.option("--no-relay", is_flag=True, help="Upload every package from the controller, even to "
                        "Macs of a site (fleetctl_site) that would otherwise fetch it from a neighbour.")


@cli.command("run")
@PLAYBOOK
@INVENTORY
@LIMIT
@EXTRA
@click.option("--forks", "-f", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many Macs to work on at once.")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust and remember keys of Macs seen for the first "
              "time (a changed key is always refused).")
@JSON
@JUNIT
@HTML
@click.option("--retry-failed", metavar="RUN_ID", help="Only the Macs that failed or were unreachable in RUN_ID.")
@NO_RELAY
def run_cmd(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
            accept_new_hostkeys: bool, json: Path | None, junit: Path | None, html: Path | None,
            retry_failed: str | None, no_relay: bool) -> None:
    """Run a playbook's action (install, upgrade, uninstall, configure, scan) on every selected Mac.

    Waves, failure thresholds and every step go to the run journal; an interrupted, halted or
    waiting run continues with `fleetctl resume RUN_ID`.

    Exit status: 0 all hosts ok, 2 invalid input (no Mac contacted), 3 some hosts failed,
    4 halted by a failure threshold, 130 interrupted.

    \b
    Example:
      fleetctl run playbooks/rollout.yml -i .fleetlab/inventory.yml --json report.json
      fleetctl run playbooks/rollout.yml -i hosts.ini --limit office --junit junit.xml --html report.html
    """
    from fleetctl import rollout

    code = rollout.run(playbook_path, inventory_path, limit, extra, forks, accept_new_hostkeys,
                       outputs(json, junit, html), out(json, junit, html), prompt(), retry_failed,
                       use_relays=not no_relay)
    sys.exit(code)


@cli.command("resume")
@click.argument("run_id")
@click.option("--forks", "-f", type=click.IntRange(1, 1000), help="Override the run's --forks.")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@JSON
@JUNIT
@HTML
@NO_RELAY
def resume_cmd(run_id: str, forks: int | None, accept_new_hostkeys: bool, json: Path | None, junit: Path | None,
               html: Path | None, no_relay: bool) -> None:
    """Continue a halted, waiting, interrupted or crashed run; finished Macs are not redone.
    First, the one-time relay keys a killed run left on Macs are removed.

    Safe for cron or a systemd timer: a wave whose not_before has not come yet just waits.

    \b
    Example:
      fleetctl resume 20261126-220000-1a2b
    """
    from fleetctl import rollout

    sys.exit(rollout.resume(run_id, forks, accept_new_hostkeys, outputs(json, junit, html), out(json, junit, html),
                            prompt(), use_relays=not no_relay))


@cli.command("runs")
def runs_cmd() -> None:
    """List recent runs from the journal ($FLEETCTL_STATE_DIR, default ~/.local/state/fleetctl).

    \b
    Example:
      fleetctl runs
    """
    from fleetctl import rollout

    rollout.list_runs(out())


@cli.command("report")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["json", "junit", "html"]),
              help="Print only this format on stdout (no table), e.g. to pipe it.")
@JSON
@JUNIT
@HTML
def report_cmd(run_id: str, fmt: str | None, json: Path | None, junit: Path | None, html: Path | None) -> None:
    """Show a run's report again, from the journal, or render it as JSON, JUnit XML or HTML.

    \b
    Examples:
      fleetctl report 20261126-070000-1a2b
      fleetctl report 20261126-070000-1a2b --format junit > junit.xml
      fleetctl report 20261126-070000-1a2b --html report.html --json report.json
    """
    from fleetctl import rollout

    sys.exit(rollout.show_report(run_id, outputs(json, junit, html), fmt, out(json, junit, html)))
