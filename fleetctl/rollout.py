"""`fleetctl run` and `fleetctl plan`: inputs in, validated plan, then the engine and the report."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from fleetctl import agent, engine, inventory, playbook, render, report
from fleetctl.errors import UsageError
from fleetctl.plan import APPLIED_FILE, WORK_DIR, HostPlan, Planner
from fleetctl.secrets import Secrets

EXIT_FAILED = 3


def parse_extra_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"-e {pair!r}: write KEY=VALUE, e.g. -e server_uri=https://host/CloudAgent")
        try:
            extra[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            extra[key] = value
    return extra


def _plans(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...],
           secrets: Secrets | None) -> tuple[playbook.Playbook, list[HostPlan]]:
    book = playbook.load(playbook_path)
    inv = inventory.load(inventory_path)
    hosts = inv.select(limit)
    for host in hosts:  # inventory < playbook vars < -e, as in Ansible
        host.vars = {**host.vars, **book.vars}
    inventory.apply_extra_vars(hosts, parse_extra_vars(extra))
    planner = Planner(book, inventory_path, secrets)
    plans = [planner.host(h) for h in hosts]
    if secrets is not None:  # every sudo password is asked for now, once, never mid-run
        for name in sorted({p.become_secret for p in plans if p.become_secret}):
            secrets.get(name, "sudo password")
    return book, plans


def show_plan(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...],
              console: Console) -> None:
    """Print the scripts each host would run (identical hosts grouped), secrets as placeholders."""
    book, plans = _plans(playbook_path, inventory_path, limit, extra, secrets=None)
    groups: dict[str, list[str]] = {}
    for p in plans:
        scripts = _scripts(p)
        groups.setdefault(scripts, []).append(p.host.name)
    console.print(f"# {book.name}: action {book.action}, {len(plans)} hosts", markup=False, highlight=False)
    for scripts, names in groups.items():
        console.print(f"\n# ==== {len(names)} host(s): {', '.join(names)}", markup=False, highlight=False)
        console.print(scripts, markup=False, highlight=False)


def _scripts(p: HostPlan) -> str:
    parts = []
    for arch, pkg in p.packages.items():
        parts.append(f"# if uname -m is {arch}: package {pkg.path.name} version {pkg.version} sha256 {pkg.sha256}\n"
                     f"#   (uploaded to {p.staged(pkg)} unless already there)\n"
                     + render.render("install", work_dir=WORK_DIR, staged=p.staged(pkg), sha256=pkg.sha256))
    parts.append(render.render(
        "configure", proxy_content=p.proxy_content, config_dir=agent.CONFIG_DIR, proxy_file=agent.PROXY_FILE,
        ca_bundle=p.ca_bundle, ca_bundle_path=agent.CA_BUNDLE, tool_paths=agent.TOOL_PATHS, options=p.options,
        marker_dir=WORK_DIR, marker="<sha256 of each setting>", applied_file=APPLIED_FILE))
    return "\n".join(f"# --- {name}\n{text}" for name, text in zip(
        [f"install ({a})" for a in p.packages] + ["configure"], parts))


def run(playbook_path: Path, inventory_path: Path, limit: str | None, extra: tuple[str, ...], forks: int,
        accept_new: bool, json_path: Path | None, console: Console,
        prompt: Callable[[str], str] | None) -> int:
    secrets = Secrets(prompt)
    book, plans = _plans(playbook_path, inventory_path, limit, extra, secrets)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    started = datetime.now(timezone.utc)
    with report.Live(console, len(plans)) as live:
        results = engine.run_all(plans, book, secrets, forks, accept_new, live.events())
    report.summary(console, results)
    if book.action == "uninstall":
        console.print("Note: each Mac's asset record, licence and results stay on the Qualys platform; "
                      "remove them there.")
    if json_path:
        report.write_json(json_path, run_id, book.action, started, results)
    return EXIT_FAILED if any(r.status in ("failed", "unreachable") for r in results) else 0
