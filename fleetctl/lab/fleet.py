"""Bring a simulated Mac fleet up and down.

Up validates everything first, claims a slot by creating its bridge, then builds files,
network, pod, proxy and one sshd per Mac, then (when some Macs are laptops) the laptops process
that sends them away or to sleep; any failure tears down what was started. Down stops
processes by pid and removes namespaces, the bridge and the sites' bridges and uplinks,
leaving nothing behind, whatever state the laptops are in.

What was started is in DIR/state.json (lab/state.py); inventory.yml and known_hosts are written
by lab/inventory.py; starting and stopping processes is lab/processes.py.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from fleetctl.errors import LabError, UsageError
from fleetctl.lab import hosts, identity, network, personas, pkgbuild, pod, podlimits, podrecords, processes, proxy
from fleetctl.lab.inventory import write_inventory, write_known_hosts
from fleetctl.lab.processes import in_mount_namespace, kill, spawn
# What callers (CLI, tests, bench) use from here, wherever it lives now.
from fleetctl.lab.state import LabHost, LabSite, LabState, alive, load, save, site, site_uplink_bytes, state_file

__all__ = ["LabHost", "LabSite", "LabState", "alive", "down", "load", "site", "site_uplink_bytes", "up"]

AGENT_VERSION = "6.1.0.20"
MAX_HOSTS = 2000
MAX_AWAY_PERIOD_S = 86400
LAPTOPS_STATUS = "laptops/status.json"


def _preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces); run it with sudo")
    missing = [t for t in ("/usr/sbin/sshd", "/usr/bin/tinyproxy", "/usr/bin/sudo", "/usr/bin/openssl") if not Path(t).exists()]
    if missing or not shutil.which("ip") or not shutil.which("unshare"):
        raise LabError(f"missing {', '.join(missing) or 'iproute2/util-linux'}; run `make install` first")


def _secret_hash(lab_dir: Path) -> str:
    """The admin password sudo-password Macs ask for, kept in DIR/sudo-password (0600)."""
    path = lab_dir / "sudo-password"
    if not path.exists():
        path.write_text(f"Lab:{secrets.token_urlsafe(12)}$;@\n")
        path.chmod(0o600)
    done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=path.read_text().strip(),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _client_key(lab_dir: Path) -> str:
    key = lab_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetlab", "-f", str(key)],
                       check=True, capture_output=True)
    return key.with_suffix(".pub").read_text()


def _packages(lab_dir: Path) -> dict[str, Path]:
    out = {}
    for arch in pkgbuild.ARCHES:
        path = lab_dir / "pkgs" / pkgbuild.default_name(AGENT_VERSION, arch)
        agent_dir = Path(pkgbuild.__file__).with_name("agent")
        sources = [Path(pkgbuild.__file__), *(agent_dir / m for m in pkgbuild.AGENT_MODULES)]
        if not path.exists() or path.stat().st_mtime < max(p.stat().st_mtime for p in sources):
            pkgbuild.build(path, AGENT_VERSION, arch)
        out[arch] = path
    return out


def _plan(count: int, persona_spec: str, site_spec: str, away_period: float,
          seed: int) -> tuple[list[personas.HostSpec], list[personas.SiteSpec]]:
    """Validate every option before anything starts: COUNT Macs on the lab's bridge come first,
    then each site's, in --sites order; personas apply to all of them in that order."""
    sites = personas.parse_sites(site_spec)
    if count < 0 or (count == 0 and not sites):
        raise UsageError("give --hosts N (Macs on the lab's own network), --sites NAME=COUNT@RATE,... or both")
    total = count + sum(s.count for s in sites)
    if total > MAX_HOSTS:
        raise UsageError(f"the lab would have {total} Macs (--hosts and --sites together); at most {MAX_HOSTS}")
    if not 0.5 <= away_period <= MAX_AWAY_PERIOD_S:
        raise UsageError(f"--away-period {away_period:g}: give seconds from 0.5 to {MAX_AWAY_PERIOD_S}")
    if seed < 0:
        raise UsageError(f"--seed {seed}: give a number from 0 up")
    sized_by = f"--hosts {count} and --sites give {total}" if sites else ""
    return personas.parse(persona_spec, total, sized_by), sites


def _host(slot: int, spec: personas.HostSpec, seed: int) -> LabHost:
    ident = identity.derive(seed, spec.index)
    return LabHost(spec.name, spec.index, network.host_address(slot, spec.index), spec.user, spec.as_list(),
                   serial=ident.serial, hardware_uuid=ident.hardware_uuid,
                   ethernet=None if spec.wifi_only else ident.ethernet, wifi=ident.wifi)


def _start_laptops(state: LabState) -> None:
    """The one process that sends away and asleep Macs off their LAN (and back); up waits until
    it has put every laptop in its first state."""
    lab_dir = Path(state.dir)
    (lab_dir / "laptops").mkdir(exist_ok=True)
    log = lab_dir / "laptops" / "laptops.log"
    state.laptops_pid = spawn([sys.executable, "-m", "fleetctl.lab.laptops", "--dir", str(lab_dir)], log)
    save(state)
    processes.wait_file(lab_dir / LAPTOPS_STATUS, state.laptops_pid, log, "the lab's laptops process")


def up(lab_dir: Path, count: int, persona_spec: str, progress: Console | None = None,
       site_spec: str = "", seed: int = 1, away_period: float = 20.0) -> LabState:
    """Start COUNT simulated Macs on the lab's network and SITE_SPEC's branch offices
    (`berlin=20@20mbit,...`) behind their uplinks; returns the saved state. SEED: the Macs'
    hardware identities and the away schedules derive from it; AWAY_PERIOD: an away=P% laptop's
    average absence, in seconds."""
    specs, sites = _plan(count, persona_spec, site_spec, away_period, seed)
    _preflight()
    lab_dir = lab_dir.resolve()
    if state_file(lab_dir).exists():
        raise UsageError(f"a lab is already running in {lab_dir}; stop it with `fleetctl lab down --dir {lab_dir}`")
    say = progress.print if progress else (lambda *a, **k: None)
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.chmod(0o755)
    started = time.monotonic()
    network.make_room(len(specs))
    slot = network.claim_slot()  # the lab's bridge: from here on, down() undoes what up did
    try:
        state = LabState(dir=str(lab_dir), slot=slot, seed=seed, away_period=away_period)
        state.hosts = [_host(slot, spec, seed) for spec in specs]
        first = count
        for s in sites:
            members = state.hosts[first:first + s.count]
            first += s.count
            state.sites.append(LabSite(s.name, s.index, s.rate, network.site_bridge(slot, s.index),
                                       *network.uplink(slot, s.index), [h.name for h in members]))
            for h in members:
                h.site = s.name
        save(state)
        say(f"building agent packages {AGENT_VERSION} (arm64, x86_64)…")
        pkgs = _packages(lab_dir)
        client_pub = _client_key(lab_dir)
        pod.make_certificate(lab_dir / "pod", hosts.POD_NAME, network.pod_address(slot))
        podlimits.write_config(lab_dir)
        podrecords.forget(lab_dir / "pod")
        hosts.write_lab_etc(lab_dir, slot, specs, _secret_hash(lab_dir))
        hosts.write_macbin(lab_dir)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for mac_path in hosts.MAC_PATHS:
            if not Path(mac_path).exists():
                Path(mac_path).mkdir(parents=True)
                state.created_paths.append(mac_path)
        save(state)
        say(f"preparing {len(specs)} Macs…")
        reachable = [s for s in specs if not s.has("unreachable")]
        with ThreadPoolExecutor(max_workers=8) as pool:
            jump = personas.jump_host(specs)
            list(pool.map(lambda s: hosts.prepare_host(lab_dir, slot, s, client_pub, jump, seed), specs))
        for s in sites:
            network.create_site(slot, s.index, s.rate_bps)
        by_index = {h.index: h for h in state.hosts}
        bridges = {h.index: site(state, h.site).bridge for h in state.hosts if h.site}
        network.create_hosts(slot, [network.MacLink(s.index, by_index[s.index].primary, not s.has("proxy-only"),
                                                    s.has("slowlink")) for s in reachable], bridges)
        state.pod_pid = spawn([sys.executable, "-m", "fleetctl.lab.pod", "--dir", str(lab_dir / "pod"),
                               "--address", network.pod_address(slot), "--port", str(network.POD_PORT)],
                              lab_dir / "pod" / "pod.log")
        pdir = proxy.prepare(lab_dir, slot)
        state.proxy_pid = spawn(in_mount_namespace(pdir), pdir / "proxy.log")
        state.proxy_front_pid = spawn(proxy.front_argv(lab_dir, slot), pdir / "proxy.log")
        for spec in reachable:
            hdir = hosts.host_dir(lab_dir, spec)
            by_index[spec.index].pid = spawn(in_mount_namespace(hdir, network.netns(slot, spec.index)),
                                             hdir / "sshd.log")
        save(state)
        say("waiting for the Macs to answer…")
        processes.wait_listening(state)
        processes.wait_proxy(state)
        if any(h.laptop for h in state.hosts):
            say("sending the laptops away and to sleep…")
            _start_laptops(state)
        write_known_hosts(lab_dir, slot, reachable)
        write_inventory(state, pkgs)
    except BaseException:
        say("[red]lab up failed; cleaning up[/red]")
        if state_file(lab_dir).exists():
            down(lab_dir)
        else:
            network.delete_bridge(slot)
        raise
    say(f"{len(specs)} Macs up in {time.monotonic() - started:.1f}s")
    return state


def down(lab_dir: Path) -> None:
    """Stop everything the lab in LAB_DIR started; safe to run twice. The laptops process goes
    first, so nothing moves a Mac while the Macs stop."""
    lab_dir = lab_dir.resolve()
    state = load(lab_dir)
    if state.laptops_pid and alive(state.laptops_pid):
        kill([state.laptops_pid])
    pids = [h.pid for h in state.hosts if h.pid and alive(h.pid)]
    for ns in state.namespaces:
        pids += network.namespace_pids(ns)
    pids += [p for p in (state.pod_pid, state.proxy_pid, state.proxy_front_pid) if p and alive(p)]
    kill(sorted(set(pids)))
    network.delete_namespaces(state.namespaces)
    network.delete_links([dev for s in state.sites for dev in (s.uplink_main, s.bridge)])
    network.delete_bridge(state.slot)
    if not any(Path(f"/sys/class/net/{network.bridge(k)}").exists() for k in range(network.MAX_SLOTS)):
        for path in reversed(state.created_paths):  # other labs' Macs would lose these mounts
            try:
                Path(path).rmdir()
            except OSError:
                pass
    state_file(lab_dir).unlink()
