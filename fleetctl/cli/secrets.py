"""`fleetctl secrets ...` and `proxy-encrypt`: secrets, kept out of argv and output."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fleetctl.errors import FleetError
from fleetctl.cli.common import cli, INVENTORY, prompt


@cli.group()
def secrets() -> None:
    """Keep ActivationId, CustomerId and passwords in the system keyring (service 'fleetctl').

    fleetctl looks a secret NAME up in $FLEETCTL_<NAME> first, then the keyring, then asks once.
    Names the rollout uses: activation_id, customer_id, and whatever proxy_password_secret and
    fleetctl_become_secret name.
    """


@secrets.command("set")
@click.argument("name")
def secrets_set(name: str) -> None:
    """Store NAME (the value is read from a hidden prompt or stdin, never from argv).

    \b
    Examples:
      fleetctl secrets set activation_id
      pass show qualys/customer-id | fleetctl secrets set customer_id
    """
    from fleetctl import secrets as store

    value = click.prompt(f"value for {name}", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not value:
        raise click.UsageError("empty value")
    store.store(name, value)
    click.echo(f"stored {name}")


@secrets.command("get")
@click.argument("name")
@click.option("--show", is_flag=True, help="Print the value itself (otherwise only whether it is set).")
def secrets_get(name: str, show: bool) -> None:
    """Tell whether NAME is set; --show prints it.

    \b
    Example:
      fleetctl secrets get activation_id
    """
    from fleetctl import secrets as store

    value = store.fetch(name)
    if value is None:
        raise FleetError(f"secret {name!r} is not set")
    click.echo(value if show else f"{name} is set")


@secrets.command("delete")
@click.argument("name")
def secrets_delete(name: str) -> None:
    """Remove NAME from the keyring.

    \b
    Example:
      fleetctl secrets delete finance_sudo
    """
    from fleetctl import secrets as store

    if not store.delete(name):
        raise FleetError(f"secret {name!r} is not set")
    click.echo(f"deleted {name}")




@cli.command("proxy-encrypt")
@INVENTORY
@click.option("--host", "host_name", required=True, metavar="MAC", help="The one Mac string-util runs on (as root).")
@click.option("--pkg", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Agent package holding string-util (default: the Mac's agent_pkg_<arch>).")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
def proxy_encrypt_cmd(inventory_path: Path, host_name: str, pkg: Path | None, accept_new_hostkeys: bool) -> None:
    """Encrypt a proxy user or password with the package's string-util, on one Mac.

    The text is read from a hidden prompt or stdin (never argv), URL-encoded, passed to
    `./string-util "<text>"` as root on MAC, exactly as the vendor guide shows, and the value
    to store is printed with its leading '#': keep it as a secret (password) or as a proxy's
    user: in the inventory.

    \b
    Example:
      fleetctl proxy-encrypt -i inventory.yml --host mac-001 | fleetctl secrets set branch_proxy
    """
    from fleetctl import inventory, stringutil
    from fleetctl.secrets import Secrets

    host = inventory.load(inventory_path).select(host_name)
    if len(host) != 1:
        raise click.UsageError(f"--host {host_name!r} names {len(host)} Macs; name exactly one")
    text = click.prompt("text to encrypt", hide_input=True, err=True) if sys.stdin.isatty() \
        else sys.stdin.readline().rstrip("\n")
    if not text:
        raise click.UsageError("empty text")
    from fleetctl.terminal import visible

    # What string-util printed is a Mac's output: shown, never sent to the terminal as is.
    click.echo(visible(stringutil.encrypt(host[0], text, pkg, Secrets(prompt()), accept_new_hostkeys)))
