"""Command line: parse, call one function, print. No logic lives here."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from fleetctl import __version__
from fleetctl.errors import FleetError

err = Console(stderr=True)


def _prompt():
    """Ask for a missing secret only when someone is at the keyboard (never in cron or CI)."""
    return (lambda text: click.prompt(text, hide_input=True)) if sys.stdin.isatty() else None


def _out(*machine_paths: Path | None) -> Console:
    """Human output: stdout, or stderr when a report goes to stdout (`--json -`), so the two never mix.
    Pipes and CI logs get wide lines instead of 80-column wrapping; NO_COLOR is honoured (rich)."""
    stderr = any(str(p) == "-" for p in machine_paths if p)
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr) if tty else Console(stderr=stderr, width=160)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetctl")
@click.option("-v", "--verbose", count=True, help="More detail: -v every step as it starts, -vv also SSH debug.")
@click.option("-q", "--quiet", is_flag=True, help="Only problems: no progress, summary rows for failed Macs only.")
def cli(verbose: int, quiet: bool) -> None:
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

    if verbose and quiet:
        raise click.UsageError("-v and -q contradict each other; pick one")
    report.set_verbosity(-1 if quiet else verbose)


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
@click.option("--hosts", "count", type=click.IntRange(1, 2000), required=True, help="How many Macs to start.")
@click.option("--personas", default="", help='Per-host traits in order, e.g. "x86_64*3,lowdisk,sudo-password+x86_64".')
@DIR_OPTION
def lab_up(count: int, personas: str, lab_dir: Path) -> None:
    """Start simulated Macs (real SSH servers) and write DIR/inventory.yml.

    \b
    Example:
      fleetctl lab up --hosts 20 --personas "x86_64*5,installer-fails,proxy-only"
    """
    from fleetctl.lab import fleet

    lab_state = fleet.up(lab_dir, count, personas, progress=err)
    from fleetctl.lab.status import show

    show(lab_state, _out())
    click.echo(f"inventory: {lab_dir / 'inventory.yml'}")


@lab.command("down")
@DIR_OPTION
def lab_down(lab_dir: Path) -> None:
    """Stop every process the lab started and remove its namespaces, bridge and mounts.

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
    """Show each simulated Mac: address, personas, whether its SSH server runs.

    \b
    Example:
      fleetctl lab status
    """
    from fleetctl.lab import fleet
    from fleetctl.lab.status import show

    show(fleet.load(lab_dir), _out())


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


PLAYBOOK = click.argument("playbook_path", metavar="PLAYBOOK", type=click.Path(dir_okay=False, path_type=Path))
FILE = click.Path(dir_okay=False, path_type=Path, allow_dash=True)
JSON = click.option("--json", type=FILE, help="Write the report as JSON (schema fleetctl.report/1, "
                    "docs/report-schema.md); '-' for stdout (the summary then goes to stderr).")
JUNIT = click.option("--junit", type=FILE, help="Write the report as JUnit XML, one testcase per Mac, for CI.")
HTML = click.option("--html", type=FILE, help="Write the report as one self-contained HTML page.")


def _outputs(json: Path | None, junit: Path | None, html: Path | None):
    from fleetctl.report_files import Outputs

    return Outputs(json, junit, html)


INVENTORY = click.option("-i", "--inventory", "inventory_path", required=True, type=click.Path(path_type=Path),
                         help="Ansible inventory: YAML or INI file, or a directory of them (group_vars/, host_vars/ "
                              "beside it are read).")
LIMIT = click.option("--limit", "-l", help="Only these hosts/groups: 'mac-0*', 'office,lab', 'all:!retired'.")
EXTRA = click.option("-e", "--extra-var", "extra", multiple=True, metavar="KEY=VALUE",
                     help="Override a variable for every host (repeatable), like Ansible's -e.")


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
def run_cmd(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
            accept_new_hostkeys: bool, json: Path | None, junit: Path | None, html: Path | None,
            retry_failed: str | None) -> None:
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
                       _outputs(json, junit, html), _out(json, junit, html), _prompt(), retry_failed)
    sys.exit(code)


@cli.command("resume")
@click.argument("run_id")
@click.option("--forks", "-f", type=click.IntRange(1, 1000), help="Override the run's --forks.")
@click.option("--accept-new-hostkeys", is_flag=True, help="Trust keys of Macs seen for the first time.")
@JSON
@JUNIT
@HTML
def resume_cmd(run_id: str, forks: int | None, accept_new_hostkeys: bool, json: Path | None, junit: Path | None,
               html: Path | None) -> None:
    """Continue a halted, waiting, interrupted or crashed run; finished Macs are not redone.

    Safe for cron or a systemd timer: a wave whose not_before has not come yet just waits.

    \b
    Example:
      fleetctl resume 20261126-220000-1a2b
    """
    from fleetctl import rollout

    sys.exit(rollout.resume(run_id, forks, accept_new_hostkeys, _outputs(json, junit, html), _out(json, junit, html),
                            _prompt()))


@cli.command("runs")
def runs_cmd() -> None:
    """List recent runs from the journal ($FLEETCTL_STATE_DIR, default ~/.local/state/fleetctl).

    \b
    Example:
      fleetctl runs
    """
    from fleetctl import rollout

    rollout.list_runs(_out())


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

    sys.exit(rollout.show_report(run_id, _outputs(json, junit, html), fmt, _out(json, junit, html)))


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
def status_cmd(inventory_path: Path, limit: str | None, since: str, forks: int, accept_new_hostkeys: bool,
               json_path: Path | None) -> None:
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
    results = status.sweep(hosts, status.collect_secrets(hosts, _prompt()), since_value, forks, accept_new_hostkeys)
    status.show(_out(json_path), results, since)
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
def doctor_cmd(inventory_path: Path, limit: str | None, forks: int, accept_new_hostkeys: bool,
               json_path: Path | None, record_dir: Path | None) -> None:
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
    secrets = status.collect_secrets(hosts, _prompt())
    found, results, plans = doctor.sweep(hosts, secrets, forks, accept_new_hostkeys)
    doctor.show(_out(json_path), found, results)
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
def logs_cmd(hosts: tuple[str, ...], inventory_path: Path, since: str, level: str, accept_new_hostkeys: bool) -> None:
    """Fetch and filter the agent log of HOSTS (names or patterns, like --limit).

    \b
    Example:
      fleetctl logs mac-017 -i inventory.yml --since 2h --level Warning
    """
    from fleetctl import status

    selected = status.select(inventory_path, ",".join(hosts))
    sys.exit(status.logs(selected, status.collect_secrets(selected, _prompt()), status.parse_since(since), level,
                         accept_new_hostkeys, _out()))


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
    click.echo(stringutil.encrypt(host[0], text, pkg, Secrets(_prompt()), accept_new_hostkeys))


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

    _emit(mdm.script("intune", playbook_path, rollout.parse_extra_vars(extra), embed_secrets, _prompt()), out, True)


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
        err.print("[red]error:[/red] " + escape(str(e)), highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
