"""Command line: parse, call one function, print. No logic lives here; one module per group."""
from __future__ import annotations

import sys

import click
from rich.text import Text

from fleetctl.cli import export, health, inventory, lab, rollout, secrets  # noqa: F401 (they register commands)
from fleetctl.cli.common import cli, err
from fleetctl.errors import FleetError


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except FleetError as e:
        err.print(Text.assemble(("error:", "red"), f" {e}"), soft_wrap=True)
        sys.exit(e.exit_code)
