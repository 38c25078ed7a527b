"""The session per Mac: connect once, learn what every action starts from, run steps, stream
uploads, record results. What to do on a Mac is each action's business (fleetctl/actions/).

Per host: connect -> probe (identity, sudo mode, agent state) -> the action's steps.
"""
from __future__ import annotations

import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Protocol

from fleetctl import agent, facts, identity, render, ssh
from fleetctl.plan import APPLIED_FILE, HostPlan, Package
from fleetctl.relay import Relays
from fleetctl.playbook import Playbook
from fleetctl.results import Events, HostResult, Step
from fleetctl.secrets import Masker, Secrets


class HostFailed(Exception):
    """TRANSIENT: the failure says nothing about the Mac (a campaign tries it again later)."""

    def __init__(self, reason: str, status: str = "failed", transient: bool = False):
        super().__init__(reason)
        self.status, self.transient = status, transient


class Aborted(Exception):
    """Second Ctrl-C: the host stops between steps and stays pending for `fleetctl resume`."""


class Action(Protocol):
    """An action module (fleetctl/actions/*.py), or an object shaped like one."""

    def scripts(self, plan: HostPlan, book: Playbook) -> list[tuple[str, str]]: ...

    def run(self, session: "Session") -> None: ...



def probe_values(action: Action) -> dict:
    """What the probe (and the state step) are rendered with; an action may add its own."""
    return {"package_id": agent.PACKAGE_ID, "label": agent.LABEL, "defaults": agent.Paths(),
            "applied_file": APPLIED_FILE, "proxy_file": agent.PROXY_FILE, "log_lines": 0, "window": [],
            "identity": False, "ports": False, "preflight": None,
            **getattr(action, "probe_values", {})}


class Session:
    """One Mac over one SSH connection, from connect to its result."""

    def __init__(self, plan: HostPlan, book: Playbook, secrets: Secrets, masker: Masker, accept_new: bool,
                 events: Events, abort: threading.Event, relays: Relays | None = None, identities=None):
        self.plan, self.book, self.secrets, self.mask, self.accept_new = plan, book, secrets, masker, accept_new
        self.events, self.abort = events, abort
        self.relays = relays  # this run's sites, when packages may come from a neighbour (relay.py)
        self.identities = identities  # identity.Book: which Mac each name is (run and resume check it)
        self.site = relays.site(plan) if relays else None
        self.keep_open = False  # a relay's connection outlives its run: its key is removed at the end
        self.result = HostResult(plan.host.name)
        self.conn: ssh.Connection | None = None
        self.mode, self.password = ssh.SHELL, None
        self.memsize: int | None = None
        self.since = ""  # the Mac's clock when the run reached it: the agent's log is read from here
        self.state: dict[str, list[str]] = {}  # root-only facts: daemon, hostid, what fleetctl applied
        self.applied: dict[str, str] = {}
        self.paths = agent.Paths()  # where this Mac's agent logs and keeps its hostid
        self.notes: list[str] = []  # warnings that do not fail the Mac, shown with its result
        self.probe_output = ""  # the probe's raw output (doctor --record keeps it)
        self.probe: dict[str, list[str]] = {}  # what the probe printed, parsed
        self.has_root = False  # privileged steps possible (root login, sudo -n or a sudo password)

    def step(self, name: str, script: str, privileged: bool = False, check: bool = True) -> ssh.Result:
        if self.abort.is_set():
            raise Aborted()
        self.events.step(self.plan.host.name, name)
        started = time.monotonic()
        try:
            result = self.conn.run(script, self.mode if privileged else ssh.SHELL, self.password,
                                   self.book.step_timeout)
        except ssh.TimedOut as e:
            self.result.steps.append(Step(name, "failed", round(time.monotonic() - started, 3), str(e)))
            raise HostFailed(f"{name}: {e} (step_timeout); its command on the Mac was stopped") from None
        detail = self.mask((result.out + result.err).strip())[-2000:]
        status = "ok" if result.rc == 0 else "failed"
        self.result.steps.append(Step(name, status, round(time.monotonic() - started, 3), detail))
        if check and result.rc != 0:
            raise HostFailed(f"{name}: {self.failure(result)}")
        return result

    def steps(self, parts: list[tuple[str, str]], privileged: bool = True) -> list[ssh.Result]:
        """Run PARTS, (name, script) in order, over ONE channel: one sudo and one round trip where
        each would cost its own (templates/steps.sh.j2). Each is still its own step in the report,
        with its own status, time and output; the first that fails ends the channel and the rest
        never start, as with separate steps. Returns the results of the parts that ran; the caller
        judges each (a failed one is already marked failed)."""
        if len(parts) == 1:
            return [self.step(parts[0][0], parts[0][1], privileged, check=False)]
        if self.abort.is_set():
            raise Aborted()
        host = self.plan.host.name
        boundary = "fleetctl-" + secrets.token_hex(12)
        marker = re.compile(r"\n" + boundary + r" (\d+)\n")
        started = [time.monotonic()]  # when each part's marker arrived
        seen = bytearray()

        def arrived(data: bytes) -> None:  # live progress and per-step times, from the markers as they come
            seen.extend(data)
            for m in marker.finditer(seen.decode(errors="replace")):
                index = int(m.group(1))
                if index >= len(started) and index < len(parts):
                    started.append(time.monotonic())
                    self.events.step(host, parts[index][0])
            del seen[:max(0, len(seen) - 80)]  # a marker split across pieces is found in the next

        self.events.step(host, parts[0][0])
        script = render.render("steps", boundary=boundary, parts=parts)
        try:
            result = self.conn.run(script, self.mode if privileged else ssh.SHELL, self.password,
                                   self.book.step_timeout * len(parts), arrived)
        except ssh.TimedOut as e:
            now = time.monotonic()
            for i, at in enumerate(started):
                last = i == len(started) - 1
                end = now if last else started[i + 1]
                self.result.steps.append(Step(parts[i][0], "failed" if last else "ok", round(end - at, 3),
                                              str(e) if last else ""))
            raise HostFailed(f"{parts[len(started) - 1][0]}: {e} (step_timeout); its command on the Mac "
                             "was stopped") from None
        end = time.monotonic()
        outs, errs = _split(result.out, marker), _split(result.err, marker)
        ran = max(len(outs), len(errs), 1)
        started += [started[-1]] * (ran - len(started))
        results = []
        for i in range(ran):
            rc = result.rc if i == ran - 1 else 0
            part = ssh.Result(rc, outs.get(i, ""), errs.get(i, ""))
            detail = self.mask((part.out + part.err).strip())[-2000:]
            took = (started[i + 1] if i + 1 < ran else end) - started[i]
            self.result.steps.append(Step(parts[i][0], "ok" if rc == 0 else "failed", round(took, 3), detail))
            results.append(part)
        return results

    def failure(self, result: ssh.Result) -> str:
        """A failed step in one line: the last line it wrote on stderr (masked), else its exit status."""
        err = result.err.strip()
        return self.mask(err.splitlines()[-1]) if err else f"exit {result.rc}"

    def check_failed(self, reason: str, transient: bool = False) -> HostFailed:
        """A step ran (exit 0) but what it found fails a check: the report marks that step failed."""
        if self.result.steps:
            self.result.steps[-1].status = "failed"
        return HostFailed(reason, transient=transient)

    def with_notes(self, reason: str | None) -> str | None:
        notes = [n for n in (reason, *self.notes) if n]
        return "; ".join(notes) or None

    def run(self, action: Action) -> HostResult:
        started = time.monotonic()
        if self.site:
            self.site.started(self.plan.host.name)
        try:
            self._open(action)
            action.run(self)
        except HostFailed as e:
            self.result.status, self.result.reason = e.status, self.mask(str(e))
            self.result.transient = e.transient
        except Aborted:
            self.result.status, self.result.reason = "pending", "aborted by Ctrl-C; resume to finish"
        except ssh.Unreachable as e:  # before the probe: not reached; after: lost mid-step (slept, left)
            self.result.status = "unreachable" if self.conn is None else "failed"
            self.result.reason = self.mask(str(e))
            self.result.transient = self.conn is not None
            self.result.silent = isinstance(e, ssh.NoAnswer)
        except Exception as e:  # a bug must not hide the other hosts' results
            self.result.status, self.result.reason = "failed", self.mask(f"internal error: {type(e).__name__}: {e}")
        finally:
            if self.site:
                self.site.left(self.plan.host.name)
            if self.conn and not self.keep_open:  # drop it: a finished Mac must not keep its SSH buffers alive
                self.conn.close()
                self.conn = None
        self.result.duration_s = round(time.monotonic() - started, 3)
        self.events.done(self.result)
        return self.result

    def _open(self, action: Action) -> None:
        """Connect and probe: one round trip tells whether the Mac needs anything (and, for
        `status`, carries the agent's records too)."""
        p, r = self.plan, self.result
        self.events.step(p.host.name, "connect")
        self.conn = self._connect()
        known = self.identities.get(p.host.name) if self.identities else None
        values = probe_values(action)
        values.update(identity=bool(self.identities), ports=bool(self.identities) and not (known and known.ether))
        with_probe = getattr(action, "with_probe", None)  # what the action asks the probe to read too
        if with_probe:
            values.update(with_probe(p))
        self.probe_output = self.step("probe", render.render("probe", **values)).out
        probe = self.probe = facts.parse(self.probe_output)
        if self.identities:
            self._check_identity(probe)
        r.arch, r.macos = facts.first(probe, "arch") or None, facts.first(probe, "macos") or None
        self.memsize = facts.number(probe, "memsize")
        r.version_before = r.version_after = facts.first(probe, "agent_version") or None
        self.since = facts.first(probe, "now")
        self.state = probe
        self.has_root = self._privilege(probe, getattr(action, "needs_root", True))
        if not self.has_root:
            self.state = {**probe, **facts.parse(self.step("state", render.render("state", **values)).out)}
        elif self.mode == ssh.SUDO_PASSWORD:  # sudo -n could not read the root-only state
            self.state = facts.parse(self.step("state", render.render("state", **values), privileged=True).out)
        self.applied = dict(line.partition("=")[::2] for line in self.state.get("applied", []))
        self.paths = agent.Paths.remembered(self.applied)

    def _connect(self) -> ssh.Connection:
        p = self.plan
        try:
            return ssh.Connection(p.endpoint, p.known_hosts, self.accept_new)
        except ssh.HostKeyChanged as e:  # another recorded Mac's key: DHCP gave it this Mac's address
            reason = self.identities and self.identities.changed_key(p.host.name, p.endpoint.hostname, e.presented)
            if reason:
                raise ssh.Unreachable(reason) from None
            raise

    def _check_identity(self, probe: dict[str, list[str]]) -> None:
        """Never act on a Mac other than the one this name was first seen as; remember it otherwise."""
        name = self.plan.host.name
        seen = identity.from_probe(probe, self.conn.host_key, self.plan.endpoint.hostname)
        problem = self.identities.mismatch(name, seen)
        if problem:
            raise HostFailed(problem, status="unreachable")  # the Mac meant was not reached
        self.result.serial = seen.serial
        self.identities.record(name, seen)

    def _privilege(self, f: dict, needs_root: bool) -> bool:
        """Choose how privileged steps run; False when they cannot (only for a read-only action)."""
        p = self.plan
        privilege = facts.first(f, "privilege")
        password = self.secrets.values.get(p.become_secret or "")
        if privilege == "root":
            self.mode = ssh.SHELL
        elif privilege == "nopasswd":
            self.mode = ssh.SUDO_NOPASSWD
        elif privilege == "password" and password is not None:
            self.mode, self.password = ssh.SUDO_PASSWORD, password
        elif not needs_root:
            return False
        elif privilege == "password":
            raise HostFailed("sudo asks for a password and none is configured: set fleetctl_become_secret "
                             "for this host and store it with `fleetctl secrets set NAME`")
        else:
            raise HostFailed(f"{p.host.user} cannot use sudo on this Mac")
        return True

    def upload(self, pkg: Package) -> None:
        """Stream the package into the login user's staging directory (the Mac checks its sha256 later)."""
        p = self.plan
        self.events.step(p.host.name, "upload")
        started = time.monotonic()
        command = render.render("upload", staged_dir=p.staged_dir, staged=p.staged(pkg))
        with open(pkg.path, "rb") as source:
            try:
                res = self.conn.stream(command, source, self.events.sent)
            except ssh.Unreachable as e:
                raise HostFailed(f"upload: {e}", transient=True) from None
            finally:
                self.result.uploaded_bytes = self.conn.bytes_sent
        self.result.steps.append(Step("upload", "ok" if res.rc == 0 else "failed",
                                      round(time.monotonic() - started, 3), f"{pkg.size} bytes"))
        if res.rc != 0:
            raise HostFailed(f"upload: {res.err.strip() or f'exit {res.rc}'}")


def _split(text: str, marker: re.Pattern) -> dict[int, str]:
    """A steps.sh.j2 stream cut at its markers: part index -> what that part wrote."""
    pieces = marker.split(text)
    parts = {int(pieces[i]): pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}
    if pieces[0]:  # before any part began (sudo refusing, say): the first step's
        parts[0] = pieces[0] + parts.get(0, "")
    return parts


def run_all(action: Action, plans: list[HostPlan], book: Playbook, secrets: Secrets, forks: int,
            accept_new: bool, events: Events, stop: threading.Event, abort: threading.Event,
            on_interrupt: Callable[[int], None] = lambda n: None,
            relays: Relays | None = None, identities=None) -> list[HostResult | None]:
    """Run ACTION on PLANS with at most FORKS at once. Once STOP is set no new host starts (its
    result is None); ABORT makes running hosts stop after their current step. Ctrl-C sets them
    in turn. With RELAYS, each site's first Mac starts first (it will likely be the relay).
    With IDENTITIES (identity.Book), each Mac is checked to be the one its name was first seen as."""
    masker = secrets.masker()
    sessions = [Session(p, book, secrets, masker, accept_new, events, abort, relays, identities) for p in plans]

    def go(session: Session) -> HostResult | None:
        return None if stop.is_set() else session.run(action)

    order = relays.order(plans) if relays else range(len(plans))
    with ThreadPoolExecutor(max_workers=max(1, forks), thread_name_prefix="host") as pool:
        submitted = {i: pool.submit(go, sessions[i]) for i in order}
        futures = [submitted[i] for i in range(len(plans))]
        interrupts = 0
        while True:
            try:
                wait(futures)
                break
            except KeyboardInterrupt:
                interrupts += 1
                stop.set()
                if interrupts > 1:
                    abort.set()
                on_interrupt(interrupts)
        return [f.result() for f in futures]
