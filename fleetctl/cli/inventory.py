"""`fleetctl inventory`: the inventory as fleetctl reads it."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fleetctl.cli.common import cli, INVENTORY, LIMIT


@cli.command("inventory")
@INVENTORY
@LIMIT
@click.option("--list", "as_list", is_flag=True, help="Groups and every host's variables as JSON (the default), "
              "in ansible-inventory --list's shape.")
@click.option("--graph", is_flag=True, help="Show groups and hosts as a tree.")
@click.option("--host", "host_name", metavar="HOST", help="Show one host's merged variables.")
def inventory_cmd(inventory_path: Path, limit: str | None, as_list: bool, graph: bool, host_name: str | None) -> None:
    """Show the inventory as fleetctl resolves it (like ansible-inventory): JSON by default.

    A host that `run` and `plan` would refuse (a missing key file, a password in the
    inventory) is shown, with a warning on stderr.

    \b
    Examples:
      fleetctl inventory -i inventories/ansible-office/hosts.ini --graph
      fleetctl inventory -i hosts.ini --host fin-mini.example.com
      fleetctl inventory -i hosts.ini --list --limit 'finance:&intel'
    """
    from fleetctl import inventory

    if as_list + graph + (host_name is not None) > 1:
        raise click.UsageError("--list, --graph and --host show different things; pick one")
    inv = inventory.load(inventory_path)
    for note in inventory.notes(inv):
        click.echo(f"warning: {note}", err=True)
    click.echo(inventory.describe(inv, limit, graph, host_name))


@cli.command("identities")
@INVENTORY
@click.option("--forget", metavar="HOST", multiple=True, help="Forget what HOST was recorded as (repeatable): "
              "after a Mac was replaced, its next contact records the new one.")
def identities_cmd(inventory_path: Path, forget: tuple[str, ...]) -> None:
    """Which Mac each inventory name is: serial, hardware UUID, Ethernet address, host key, last seen.

    `run` and `resume` record them at a Mac's first contact and check them at every later one:
    a different Mac answering for a name (DHCP gave its address to another Mac) is never acted on.

    \b
    Examples:
      fleetctl identities -i laptops.yml
      fleetctl identities -i laptops.yml --forget mac-017     # mac-017 was replaced
    """
    from fleetctl import identity
    from fleetctl.cli.common import out

    sys.exit(identity.show(out(), inventory_path, forget))
