"""What every command group shares: the root `cli` group, output consoles, common options."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fleetctl import __version__
from fleetctl.terminal import Console

err = Console(stderr=True)  # messages about the command itself

def prompt():
    """Ask for a missing secret only when someone is at the keyboard (never in cron or CI)."""
    return (lambda text: click.prompt(text, hide_input=True)) if sys.stdin.isatty() else None


def out(*machine_paths: Path | None) -> Console:
    """Human output: stdout, or stderr when a report goes to stdout (`--json -`), so the two never mix.
    Pipes and CI logs get wide lines instead of 80-column wrapping; NO_COLOR is honoured (rich)."""
    stderr = any(str(p) == "-" for p in machine_paths if p)
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr) if tty else Console(stderr=stderr, width=160)



def _verbosity(ctx: click.Context, param: click.Parameter, value) -> None:
    """-v and -q count wherever they are typed: before the command or at the end of the line."""
    if not value:
        return
    from fleetctl import report

    meta = ctx.find_root().meta
    if param.name == "quiet":
        meta["quiet"] = True
    else:
        meta["verbose"] = meta.get("verbose", 0) + value
    if meta.get("quiet") and meta.get("verbose"):
        raise click.UsageError("-v and -q contradict each other; pick one")
    report.set_verbosity(-1 if meta.get("quiet") else meta["verbose"])


def _verbosity_options() -> list[click.Option]:
    return [click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_verbosity,
                         help="More detail: -v every step as it starts, -vv also SSH debug."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_verbosity,
                         help="Only problems: no progress, summary rows for failed Macs only.")]


class _Group(click.Group):
    """Every command (and sub-group) also takes -v/-q, so `fleetctl run ... -q` works as typed."""

    group_class = type  # sub-groups are _Group too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "verbose" for p in cmd.params):
            cmd.params.extend(_verbosity_options())
        super().add_command(cmd, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetctl")
def cli() -> None:
    """Roll the Qualys Cloud Agent out to fleets of Macs over SSH, and keep it healthy.

    \b
    Start here:
      fleetctl lab up --hosts 8                  # a simulated fleet to try things on (root)
      fleetctl inventory -i hosts.ini --graph     # your Ansible inventory, as fleetctl reads it
      fleetctl plan playbooks/rollout.yml -i hosts.ini
      fleetctl run playbooks/rollout.yml -i hosts.ini --html report.html
      fleetctl status -i hosts.ini
    """
    from fleetctl import report

    meta = click.get_current_context().meta  # what -v/-q before the command said; none: the default
    report.set_verbosity(-1 if meta.get("quiet") else meta.get("verbose", 0))


cli.params.extend(_verbosity_options())


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      fleetctl completion bash > /etc/bash_completion.d/fleetctl
      fleetctl completion zsh > "${fpath[1]}/_fleetctl"
      fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish
    """
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)(cli, {}, "fleetctl", "_FLEETCTL_COMPLETE")
    click.echo(complete.source())


PLAYBOOK = click.argument("playbook_path", metavar="PLAYBOOK", type=click.Path(dir_okay=False, path_type=Path))
FILE = click.Path(dir_okay=False, path_type=Path, allow_dash=True)
JSON = click.option("--json", type=FILE, help="Write the report as JSON (schema fleetctl.report/1, "
                    "docs/report-schema.md); '-' for stdout (the summary then goes to stderr).")
JUNIT = click.option("--junit", type=FILE, help="Write the report as JUnit XML, one testcase per Mac, for CI.")
HTML = click.option("--html", type=FILE, help="Write the report as one self-contained HTML page.")


def outputs(json: Path | None, junit: Path | None, html: Path | None):
    from fleetctl.report_files import Outputs

    return Outputs(json, junit, html)


INVENTORY = click.option("-i", "--inventory", "inventory_path", required=True, type=click.Path(path_type=Path),
                         help="Ansible inventory: YAML or INI file, or a directory of them (group_vars/, host_vars/ "
                              "beside it are read).")
LIMIT = click.option("--limit", "-l", help="Only these hosts/groups: 'mac-0*', 'office,lab', 'all:!retired'.")
EXTRA = click.option("-e", "--extra-var", "extra", multiple=True, metavar="KEY=VALUE",
                     help="Override a variable for every host (repeatable), like Ansible's -e.")
