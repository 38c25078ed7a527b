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
NO_WAKE = click.option("--no-wake", is_flag=True, help="Do not ask a reachable Mac of a site to send a Wake-on-LAN "
                       "packet to its unreachable neighbours.")
STAY = click.option("--stay", is_flag=True, help="A campaign: keep running in the foreground, retrying on schedule "
                    "with a live table, until every Mac converged or the deadline passed (Ctrl-C leaves it resumable).")


def _time(ctx, param, value):
    from fleetctl.waves import parse_time

    return None if value is None else parse_time(value, "--until", "--until")


def _duration(ctx, param, value):
    from fleetctl.waves import parse_duration

    return None if value is None else parse_duration(value, "--retry-every", "--retry-every")


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
@click.option("--until", metavar="'YYYY-MM-DD HH:MM'", callback=_time,
              help="Make the run a campaign: Macs that cannot be reached stay pending and are retried (resume, "
                   "--stay) until this local time. Overrides the playbook's until:.")
@click.option("--retry-every", metavar="DURATION", callback=_duration,
              help="A campaign's retry interval (30m default; later attempts back off to 2x and 4x). "
                   "Overrides the playbook's retry_every:.")
@STAY
@NO_WAKE
def run_cmd(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
            accept_new_hostkeys: bool, json: Path | None, junit: Path | None, html: Path | None,
            retry_failed: str | None, no_relay: bool, until, retry_every: int | None, stay: bool,
            no_wake: bool) -> None:
    """Run a playbook's action (install, upgrade, uninstall, configure, scan) on every selected Mac.

    Waves, failure thresholds and every step go to the run journal; an interrupted, halted or
    waiting run continues with `fleetctl resume RUN_ID`. With --until it is a campaign that
    converges over days: Macs asleep or away are retried on schedule, not failed.

    Exit status: 0 all hosts ok, 2 invalid input (no Mac contacted), 3 some hosts failed,
    4 halted by a failure threshold, 130 interrupted.

    \b
    Example:
      fleetctl run playbooks/rollout.yml -i .fleetlab/inventory.yml --json report.json
      fleetctl run playbooks/rollout.yml -i hosts.ini --limit office --junit junit.xml --html report.html
      fleetctl run playbooks/rollout.yml -i laptops.yml --until '2026-12-20 18:00' --retry-every 30m
    """
    from fleetctl import rollout

    code = rollout.run(playbook_path, inventory_path, limit, extra, forks, accept_new_hostkeys,
                       outputs(json, junit, html), out(json, junit, html), prompt(), retry_failed,
                       use_relays=not no_relay, until=until, retry_every=retry_every, stay=stay, use_wake=not no_wake)
    sys.exit(code)


@cli.command("resume")
@click.argument("run_id")
@click.option("--forks", "-f", type=click.IntRange(1, 1000), help="Override the run's --forks.")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@JSON
@JUNIT
@HTML
@NO_RELAY
@STAY
@NO_WAKE
@click.option("--continue-halted", is_flag=True, help="Continue a campaign that its failure threshold halted "
              "(cron never does).")
def resume_cmd(run_id: str, forks: int | None, accept_new_hostkeys: bool, json: Path | None, junit: Path | None,
               html: Path | None, no_relay: bool, stay: bool, no_wake: bool, continue_halted: bool) -> None:
    """Continue a halted, waiting, interrupted or crashed run; finished Macs are not redone.
    First, the one-time relay keys a killed run left on Macs are removed.

    Safe for cron or a systemd timer: a wave whose not_before has not come yet just waits. For a
    campaign (run --until) it tries only the pending Macs whose retry time has come, never a
    converged or failed one, and finishes the run once the deadline has passed.

    \b
    Examples:
      fleetctl resume 20261126-220000-1a2b
      */10 * * * * fleetctl resume 20261206-090000-1a2b -q     # a campaign, from cron
    """
    from fleetctl import rollout

    sys.exit(rollout.resume(run_id, forks, accept_new_hostkeys, outputs(json, junit, html), out(json, junit, html),
                            prompt(), use_relays=not no_relay, use_wake=not no_wake, stay=stay,
                            continue_halted=continue_halted))


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
