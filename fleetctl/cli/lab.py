"""`fleetctl lab ...`: the simulated Mac fleet."""
from __future__ import annotations

from pathlib import Path

import click

from fleetctl.cli.common import cli, err, out


@cli.group()
def lab() -> None:
    """A simulated Mac fleet (real SSH servers that behave like Macs) to try fleetctl on.

    Needs root on Linux: every simulated Mac gets its own network and mount namespace.
    """


DIR_OPTION = click.option(
    "--dir", "lab_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".fleetlab"),
    show_default=True, help="Where the lab keeps its keys, inventory, packages and state.",
)


@lab.command("up")
@click.option("--hosts", "count", type=click.IntRange(0, 2000), help="How many Macs to start on the lab's own "
              "network (required unless --sites is given; 0 with --sites: only the sites' Macs).")
@click.option("--sites", default="", help="Branch offices, each its own LAN behind one uplink shaped to RATE "
              'both ways (tc tbf): "NAME=COUNT@RATE,...", e.g. "berlin=20@20mbit,paris=10@5mbit"; '
              "their Macs follow the --hosts ones.")
@click.option("--personas", default="", help='Per-host traits in order, e.g. "x86_64*3,lowdisk,sudo-password+x86_64"; '
              'laptops: "away=40%", "asleep", "asleep-wifi", "renumbered*2".')
@click.option("--seed", type=int, default=1, show_default=True, help="The Macs' serial numbers, hardware UUIDs and "
              "addresses, and the away schedules, derive from it: the same seed gives the same Macs.")
@click.option("--away-period", type=float, default=20.0, show_default=True, metavar="SECONDS",
              help="How long an away=P% laptop stays gone each time, on average.")
@DIR_OPTION
def lab_up(count: int | None, sites: str, personas: str, seed: int, away_period: float, lab_dir: Path) -> None:
    """Start simulated Macs (real SSH servers) and write DIR/inventory.yml.

    \b
    Examples:
      fleetctl lab up --hosts 20 --personas "x86_64*5,installer-fails,proxy-only"
      fleetctl lab up --hosts 2 --sites "berlin=20@20mbit,paris=10@5mbit"
      fleetctl lab up --hosts 1 --sites "berlin=4@20mbit" --personas "arm64,away=40%,asleep,asleep-wifi"
    """
    from fleetctl.lab import fleet

    lab_state = fleet.up(lab_dir, count or 0, personas, progress=err, site_spec=sites, seed=seed,
                         away_period=away_period)
    from fleetctl.lab.status import show

    show(lab_state, out())
    click.echo(f"inventory: {lab_dir / 'inventory.yml'}")


@lab.command("down")
@DIR_OPTION
def lab_down(lab_dir: Path) -> None:
    """Stop every process the lab started and remove its namespaces, bridges, uplinks and mounts.

    \b
    Example:
      fleetctl lab down --dir .fleetlab
    """
    from fleetctl.lab import fleet

    fleet.down(lab_dir)
    click.echo(f"lab in {lab_dir} is down")


@lab.command("status")
@DIR_OPTION
def lab_status(lab_dir: Path) -> None:
    """Show each simulated Mac: address, site, personas, whether its SSH server runs.

    \b
    Example:
      fleetctl lab status
    """
    from fleetctl.lab import fleet
    from fleetctl.lab.status import show

    show(fleet.load(lab_dir), out())


@lab.command("sleep")
@click.argument("names", nargs=-1, required=True)
@DIR_OPTION
def lab_sleep(names: tuple[str, ...], lab_dir: Path) -> None:
    """Put asleep Macs (woken by a magic packet) back to sleep; returns once they are asleep.

    \b
    Example:
      fleetctl lab sleep mac-003 mac-004 --dir .fleetlab
    """
    from fleetctl.lab import laptopctl

    laptopctl.sleep(lab_dir, list(names))
    click.echo(f"asleep: {' '.join(names)}")


@lab.command("renumber")
@DIR_OPTION
def lab_renumber(lab_dir: Path) -> None:
    """Move the renumbered Macs' addresses in a ring, as DHCP after a trip: each takes the next
    one's address (the last the first's). Host keys stay with their Macs; inventory.yml and
    known_hosts keep the old addresses, as an admin's would.

    \b
    Example:
      fleetctl lab renumber --dir .fleetlab
    """
    from fleetctl.lab import laptopctl

    for name, old, new in laptopctl.renumber(lab_dir):
        click.echo(f"{name}: {old} -> {new}")


@lab.command("pkg")
@click.option("--version", "version", required=True, help="Agent version, four parts, e.g. 6.1.0.20.")
@click.option("--arch", type=click.Choice(["arm64", "x86_64"]), required=True, help="Host architecture it installs on.")
@click.option("--size-mb", type=int, default=40, show_default=True, help="Package size (incompressible).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Package file to write.")
def lab_pkg(version: str, arch: str, size_mb: int, out: Path) -> None:
    """Build a fake agent package in Apple's flat-package format.

    \b
    Example:
      fleetctl lab pkg --version 6.1.0.20 --arch arm64 --out QualysCloudAgent.pkg
    """
    from fleetctl.lab import pkgbuild

    pkgbuild.build(out, version, arch, size_mb)
    click.echo(str(out))
