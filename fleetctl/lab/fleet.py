"""Bring a simulated Mac fleet up and down, and remember what was started (DIR/state.json).

Up validates everything first, claims a slot by creating its bridge, then builds files,
network, pod, proxy and one sshd per Mac; any failure tears down what was started. Down stops
processes by pid and removes namespaces, the bridge and the sites' bridges and uplinks,
leaving nothing behind.

state.json: {"dir", "slot", "hosts": [{"name", "index", "address", "user", "personas", "pid", "site"}],
"pod_pid", "proxy_pid", "proxy_front_pid", "created_paths",
"sites": [{"name", "index", "rate", "bridge", "uplink_main", "uplink_site", "hosts": [names]}]}
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from fleetctl.errors import LabError, UsageError
from fleetctl.lab import hosts, network, personas, pkgbuild, pod, proxy

AGENT_VERSION = "6.1.0.20"
BOOT = Path(__file__).with_name("boot.py")
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
MAX_HOSTS = 2000


@dataclass
class LabHost:
    name: str
    index: int
    address: str
    user: str
    personas: list[str]
    pid: int | None = None  # sshd; None for unreachable Macs
    site: str | None = None  # its branch-office site; None: on the lab's own bridge


@dataclass
class LabSite:
    """A branch office: its Macs on a bridge of their own, one shaped uplink to the lab's bridge."""

    name: str
    index: int
    rate: str  # tc's notation, e.g. 20mbit, both directions
    bridge: str
    uplink_main: str  # the uplink's end on the lab's bridge: its tx_bytes went controller -> site
    uplink_site: str
    hosts: list[str] = field(default_factory=list)


@dataclass
class LabState:
    dir: str
    slot: int
    hosts: list[LabHost] = field(default_factory=list)
    pod_pid: int | None = None
    proxy_pid: int | None = None  # tinyproxy
    proxy_front_pid: int | None = None  # proxyauth.py, where the Macs find the proxy
    created_paths: list[str] = field(default_factory=list)
    sites: list[LabSite] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return [network.netns(self.slot, h.index) for h in self.hosts if "unreachable" not in h.personas]


def _state_file(lab_dir: Path) -> Path:
    return lab_dir / "state.json"


def _save(state: LabState) -> None:
    path = _state_file(Path(state.dir))
    path.write_text(json.dumps(asdict(state), indent=1))


def load(lab_dir: Path) -> LabState:
    path = _state_file(lab_dir)
    if not path.exists():
        raise LabError(f"no lab is running in {lab_dir}; start one with `fleetctl lab up --hosts N --dir {lab_dir}`")
    raw = json.loads(path.read_text())
    raw["hosts"] = [LabHost(**h) for h in raw["hosts"]]
    raw["sites"] = [LabSite(**s) for s in raw.get("sites", [])]
    return LabState(**raw)


def site(state: LabState, name: str) -> LabSite:
    found = next((s for s in state.sites if s.name == name), None)
    if found is None:
        known = ", ".join(s.name for s in state.sites) or "none"
        raise LabError(f"the lab in {state.dir} has no site {name!r} (its sites: {known})")
    return found


def site_uplink_bytes(lab_dir: Path, name: str, from_site: bool = False) -> int:
    """Bytes that crossed site NAME's uplink so far: controller -> site (the default; pod and
    proxy traffic too), or site -> controller with FROM_SITE. Traffic within the site's LAN
    never crosses it. Take the difference of two readings."""
    state = load(lab_dir.resolve())
    found = site(state, name)
    return (network.uplink_rx_bytes if from_site else network.uplink_tx_bytes)(state.slot, found.index)


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


def _spawn(argv: list[str], log: Path) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    return proc.pid


def _in_mount_namespace(directory: Path, netns: str | None = None) -> list[str]:
    """A Mac also gets its own PID namespace, so `ps` and pids show only its own processes."""
    mac = ["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if netns else ["unshare"]
    return [*mac, "--mount", "--uts", "--propagation", "private",
            "/usr/bin/python3", "-I", "-S", str(BOOT), str(directory)]


def _wait_proxy(state: LabState) -> None:
    """The front and tinyproxy behind it both accept connections (bounded wait)."""
    ends = [(network.controller_address(state.slot), network.PROXY_PORT),
            (proxy.inner_address(state.slot), network.PROXY_PORT)]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ends:
        try:
            socket.create_connection(ends[0], timeout=0.5).close()
            ends.pop(0)
        except OSError:
            if time.monotonic() > deadline or not (alive(state.proxy_pid) and alive(state.proxy_front_pid)):
                log = (Path(state.dir) / "proxy" / "proxy.log").read_text(errors="replace").strip()
                raise LabError(f"the lab proxy does not answer on {ends[0][0]}:{ends[0][1]}: {log[-500:]}")
            time.sleep(0.1)


def _wait_listening(state: LabState) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = [h for h in state.hosts if h.pid]
    while pending and time.monotonic() < deadline:
        still = []
        for h in pending:
            if not alive(h.pid):
                log = (Path(state.dir) / "hosts" / h.name / "sshd.log").read_text(errors="replace").strip()
                raise LabError(f"{h.name}: sshd exited at start: {log[-500:]}")
            try:
                socket.create_connection((h.address, 22), timeout=0.5).close()
            except OSError:
                still.append(h)
        pending = still
        if pending:
            time.sleep(0.1)
    if pending:
        raise LabError(f"{len(pending)} Macs did not answer on port 22 within {READY_TIMEOUT_S}s, e.g. {pending[0].name}")


def alive(pid: int | None) -> bool:
    """Running and not a zombie (a pid from state.json may be long gone)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _write_inventory(state: LabState, pkgs: dict[str, Path]) -> Path:
    lab_dir = Path(state.dir)
    host_vars = {}
    jump = next((h for h in state.hosts if "jump-host" in h.personas), None)
    for h in state.hosts:
        host_vars[h.name] = {
            "ansible_host": h.address,
            "ansible_port": 22,
            "ansible_user": h.user,
            "lab_personas": h.personas,
        }
        if "sudo-password" in h.personas:
            host_vars[h.name]["fleetctl_become_secret"] = "lab_sudo_password"
        if "behind-bastion" in h.personas and jump:
            host_vars[h.name]["ansible_ssh_common_args"] = f"-J {jump.user}@{jump.address}"
        if "proxy-only" in h.personas:
            host_vars[h.name].update({"proxy_urls": [proxy.url(lab_dir, state.slot)], "proxy_user": proxy.USER,
                                      "proxy_password_secret": "lab_proxy_password"})
    children = {}
    for s in state.sites:
        children[s.name] = {"vars": {"fleetctl_site": s.name}, "hosts": {name: None for name in s.hosts}}
    inventory = {"all": {
        "vars": {
            "ansible_ssh_private_key_file": str(lab_dir / "id_ed25519"),
            "fleetctl_known_hosts": str(lab_dir / "known_hosts"),
            "agent_pkg_arm64": str(pkgs["arm64"]),
            "agent_pkg_x86_64": str(pkgs["x86_64"]),
            "server_uri": f"https://{hosts.POD_NAME}/CloudAgent",
            "fleetctl_pod_ca": hosts.LAB_CA,
            "lab_proxy_url": proxy.url(lab_dir, state.slot),
            "lab_proxy_user": proxy.USER,
            "lab_proxy_password_file": str(lab_dir / "proxy-password"),
            "lab_proxy2_user": proxy.USER2,  # a second account, for per-proxy credentials
            "lab_proxy2_password_file": str(lab_dir / "proxy2-password"),
            "lab_sudo_password_file": str(lab_dir / "sudo-password"),
        },
        "hosts": host_vars,
        **({"children": children} if children else {}),
    }}
    path = lab_dir / "inventory.yml"
    header = "# Written by `fleetctl lab up`: the simulated Macs, in Ansible's inventory layout.\n"
    path.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    return path


def _plan(count: int, persona_spec: str, site_spec: str) -> tuple[list[personas.HostSpec], list[personas.SiteSpec]]:
    """Validate every option before anything starts: COUNT Macs on the lab's bridge come first,
    then each site's, in --sites order; personas apply to all of them in that order."""
    sites = personas.parse_sites(site_spec)
    if count < 0 or (count == 0 and not sites):
        raise UsageError("give --hosts N (Macs on the lab's own network), --sites NAME=COUNT@RATE,... or both")
    total = count + sum(s.count for s in sites)
    if total > MAX_HOSTS:
        raise UsageError(f"the lab would have {total} Macs (--hosts and --sites together); at most {MAX_HOSTS}")
    sized_by = f"--hosts {count} and --sites give {total}" if sites else ""
    return personas.parse(persona_spec, total, sized_by), sites


def up(lab_dir: Path, count: int, persona_spec: str, progress: Console | None = None,
       site_spec: str = "") -> LabState:
    """Start COUNT simulated Macs on the lab's network and SITE_SPEC's branch offices
    (`berlin=20@20mbit,...`) behind their uplinks; returns the saved state."""
    specs, sites = _plan(count, persona_spec, site_spec)
    _preflight()
    lab_dir = lab_dir.resolve()
    if _state_file(lab_dir).exists():
        raise UsageError(f"a lab is already running in {lab_dir}; stop it with `fleetctl lab down --dir {lab_dir}`")
    say = progress.print if progress else (lambda *a, **k: None)
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.chmod(0o755)
    started = time.monotonic()
    network.make_room(len(specs))
    slot = network.claim_slot()  # the lab's bridge: from here on, down() undoes what up did
    try:
        state = LabState(dir=str(lab_dir), slot=slot)
        for spec in specs:
            state.hosts.append(LabHost(spec.name, spec.index, network.host_address(slot, spec.index),
                                       spec.user, spec.as_list()))
        first = count
        for s in sites:
            members = state.hosts[first:first + s.count]
            first += s.count
            state.sites.append(LabSite(s.name, s.index, s.rate, network.site_bridge(slot, s.index),
                                       *network.uplink(slot, s.index), [h.name for h in members]))
            for h in members:
                h.site = s.name
        _save(state)
        say(f"building agent packages {AGENT_VERSION} (arm64, x86_64)…")
        pkgs = _packages(lab_dir)
        client_pub = _client_key(lab_dir)
        pod.make_certificate(lab_dir / "pod", hosts.POD_NAME)
        hosts.write_lab_etc(lab_dir, slot, specs, _secret_hash(lab_dir))
        hosts.write_macbin(lab_dir)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for mac_path in hosts.MAC_PATHS:
            if not Path(mac_path).exists():
                Path(mac_path).mkdir(parents=True)
                state.created_paths.append(mac_path)
        _save(state)
        say(f"preparing {len(specs)} Macs…")
        reachable = [s for s in specs if not s.has("unreachable")]
        with ThreadPoolExecutor(max_workers=8) as pool:
            jump = personas.jump_host(specs)
            list(pool.map(lambda s: hosts.prepare_host(lab_dir, slot, s, client_pub, jump), specs))
        for s in sites:
            network.create_site(slot, s.index, s.rate_bps)
        bridges = {h.index: site(state, h.site).bridge for h in state.hosts if h.site}
        network.create_hosts(slot, [(s.index, not s.has("proxy-only"), s.has("slowlink")) for s in reachable], bridges)
        state.pod_pid = _spawn([sys.executable, "-m", "fleetctl.lab.pod", "--dir", str(lab_dir / "pod"),
                                "--address", network.pod_address(slot), "--port", str(network.POD_PORT)],
                               lab_dir / "pod" / "pod.log")
        pdir = proxy.prepare(lab_dir, slot)
        state.proxy_pid = _spawn(_in_mount_namespace(pdir), pdir / "proxy.log")
        state.proxy_front_pid = _spawn(proxy.front_argv(lab_dir, slot), pdir / "proxy.log")
        by_index = {h.index: h for h in state.hosts}
        for spec in reachable:
            hdir = hosts.host_dir(lab_dir, spec)
            by_index[spec.index].pid = _spawn(_in_mount_namespace(hdir, network.netns(slot, spec.index)), hdir / "sshd.log")
        _save(state)
        say("waiting for the Macs to answer…")
        _wait_listening(state)
        _wait_proxy(state)
        (lab_dir / "known_hosts").write_text("".join(hosts.known_hosts_line(lab_dir, slot, s) for s in reachable))
        _write_inventory(state, pkgs)
    except BaseException:
        say("[red]lab up failed; cleaning up[/red]")
        if _state_file(lab_dir).exists():
            down(lab_dir)
        else:
            network.delete_bridge(slot)
        raise
    say(f"{len(specs)} Macs up in {time.monotonic() - started:.1f}s")
    return state


def _kill(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S / 2
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return
    raise LabError(f"processes {pids} would not stop")


def down(lab_dir: Path) -> None:
    """Stop everything the lab in LAB_DIR started; safe to run twice."""
    lab_dir = lab_dir.resolve()
    state = load(lab_dir)
    pids = [h.pid for h in state.hosts if h.pid and alive(h.pid)]
    for ns in state.namespaces:
        pids += network.namespace_pids(ns)
    pids += [p for p in (state.pod_pid, state.proxy_pid, state.proxy_front_pid) if p and alive(p)]
    _kill(sorted(set(pids)))
    network.delete_namespaces(state.namespaces)
    network.delete_links([dev for s in state.sites for dev in (s.uplink_main, s.bridge)])
    network.delete_bridge(state.slot)
    if not any(Path(f"/sys/class/net/{network.bridge(k)}").exists() for k in range(network.MAX_SLOTS)):
        for path in reversed(state.created_paths):  # other labs' Macs would lose these mounts
            try:
                Path(path).rmdir()
            except OSError:
                pass
    _state_file(lab_dir).unlink()
