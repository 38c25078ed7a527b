"""What an admin expects of any serious CLI: help with examples everywhere, --version,
completion, -v/-q, and a package that ships every file it needs (pipx install .)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from fleetctl import __version__
from fleetctl.cli import cli

ROOT = Path(__file__).resolve().parents[2]
FLEETCTL = Path(sys.executable).with_name("fleetctl")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("words", list(_commands(cli)), ids=" ".join)
def test_every_command_has_help_with_an_example(words):
    done = subprocess.run([str(FLEETCTL), *words, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "Example" in done.stdout, done.stdout


def test_version_and_conflicting_verbosity():
    assert subprocess.run([str(FLEETCTL), "--version"], capture_output=True, text=True).stdout == \
        f"fleetctl, version {__version__}\n"
    done = subprocess.run([str(FLEETCTL), "-q", "-v", "runs"], capture_output=True, text=True)
    assert done.returncode == 2 and "contradict" in done.stderr


def test_bash_completion_script_parses_and_completes(tmp_path):
    script = subprocess.run([str(FLEETCTL), "completion", "bash"], capture_output=True, text=True).stdout
    (tmp_path / "fleetctl.bash").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "fleetctl.bash")]).returncode == 0
    done = subprocess.run([str(FLEETCTL)], capture_output=True, text=True, env={
        "_FLEETCTL_COMPLETE": "bash_complete", "COMP_WORDS": "fleetctl export p", "COMP_CWORD": "2"})
    assert done.stdout.split() == ["plain,pppc"]


def test_the_package_ships_every_data_file():
    """pipx/pip install only what package-data names: a new template in a new place must be listed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {f for package, patterns in config.items() for pattern in patterns
               for f in (ROOT / package.replace(".", "/")).glob(pattern)}  # setuptools globs the same way
    data = [p for p in (ROOT / "fleetctl").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    # templates/ sits at the repository's root; fleetctl/templates links to it so the wheel carries it
    assert (ROOT / "fleetctl" / "templates").resolve() == ROOT / "templates"
    data += [ROOT / "fleetctl" / "templates" / p.name for p in (ROOT / "templates").iterdir()]
    assert any(p.suffix == ".j2" for p in data)
    missing = [str(p.relative_to(ROOT)) for p in data if p not in shipped]
    assert not missing, f"not in package-data: {missing}"
