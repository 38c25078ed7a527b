"""Run a rollout: every host over one SSH connection, hosts in parallel (--forks).

Per host: facts -> preflight -> upload (skipped when the sha256 matches) -> install ->
configure -> verify. A failed check stops that host before anything changes.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from fleetctl import agent, agentlog, facts, render, ssh
from fleetctl.plan import APPLIED_FILE, HostPlan
from fleetctl.playbook import Playbook
from fleetctl.secrets import Masker, Secrets

LOG_EXCERPT = 20  # agent log lines kept per Mac for the reports
LOG_LINES = 2000  # agent records read back since the run began
POLL_S = 2.0  # between reads of the log while waiting for an admin's pattern


@dataclass
class Step:
    name: str
    status: str  # ok | changed | failed | skipped
    duration_s: float
    detail: str = ""


@dataclass
class HostResult:
    name: str
    status: str = "running"  # ok | changed | failed | unreachable | skipped | pending (aborted)
    reason: str | None = None
    arch: str | None = None
    macos: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    uploaded_bytes: int = 0
    duration_s: float = 0.0
    steps: list[Step] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # the agent's log since the run began (tail), for reports


class HostFailed(Exception):
    def __init__(self, reason: str, status: str = "failed"):
        super().__init__(reason)
        self.status = status


@dataclass
class Events:
    """Callbacks the live report listens to (called from worker threads)."""

    step: Callable[[str, str], None] = lambda host, step: None
    sent: Callable[[int], None] = lambda n: None
    done: Callable[[HostResult], None] = lambda result: None


class HostRun:
    def __init__(self, plan: HostPlan, book: Playbook, secrets: Secrets, masker: Masker, accept_new: bool,
                 events: Events, abort: threading.Event):
        self.plan, self.secrets, self.mask, self.accept_new = plan, secrets, masker, accept_new
        self.book, self.action, self.verify_s, self.events = book, book.action, book.verify_timeout, events
        self.abort = abort
        self.result = HostResult(plan.host.name)
        self.conn: ssh.Connection | None = None
        self.mode, self.password = ssh.SHELL, None
        self.memsize: int | None = None
        self.paths = agent.Paths()  # where this Mac's agent logs and keeps its hostid
        self.notes: list[str] = []  # warnings that do not fail the Mac, shown with its result

    def _step(self, name: str, script: str, privileged: bool = False, check: bool = True) -> ssh.Result:
        if self.abort.is_set():
            raise Aborted()
        self.events.step(self.plan.host.name, name)
        started = time.monotonic()
        result = self.conn.run(script, self.mode if privileged else ssh.SHELL, self.password)
        detail = self.mask((result.out + result.err).strip())[-2000:]
        status = "ok" if result.rc == 0 else "failed"
        self.result.steps.append(Step(name, status, round(time.monotonic() - started, 3), detail))
        if check and result.rc != 0:
            reason = self.mask(result.err.strip().splitlines()[-1] if result.err.strip() else f"exit {result.rc}")
            raise HostFailed(f"{name}: {reason}")
        return result

    def run(self) -> HostResult:
        started = time.monotonic()
        try:
            self._run()
        except HostFailed as e:
            self.result.status, self.result.reason = e.status, self.mask(str(e))
        except Aborted:
            self.result.status, self.result.reason = "pending", "aborted by Ctrl-C; resume to finish"
        except ssh.Unreachable as e:
            self.result.status = "unreachable" if self.conn is None else "failed"
            self.result.reason = self.mask(str(e))
        except Exception as e:  # a bug must not hide the other hosts' results
            self.result.status, self.result.reason = "failed", self.mask(f"internal error: {type(e).__name__}: {e}")
        finally:
            if self.conn:  # drop it too: a finished Mac must not keep its SSH buffers alive
                self.conn.close()
                self.conn = None
        self.result.duration_s = round(time.monotonic() - started, 3)
        self.events.done(self.result)
        return self.result

    def _run(self) -> None:
        p, h, r = self.plan, self.plan.host, self.result
        self.events.step(h.name, "connect")
        self.conn = ssh.Connection(p.endpoint, p.known_hosts, self.accept_new)
        probe = facts.parse(self._step("probe", render.render(
            "probe", package_id=agent.PACKAGE_ID, label=agent.LABEL, defaults=agent.Paths(),
            applied_file=APPLIED_FILE)).out)
        r.arch, r.macos = facts.first(probe, "arch") or None, facts.first(probe, "macos") or None
        self.memsize = facts.number(probe, "memsize")
        r.version_before = r.version_after = facts.first(probe, "agent_version") or None
        self.since = facts.first(probe, "now")
        self._privilege(probe)
        state = probe
        if self.mode == ssh.SUDO_PASSWORD:  # sudo -n could not read the root-only state
            state = facts.parse(self._step("state", render.render(
                "state", label=agent.LABEL, defaults=agent.Paths(), applied_file=APPLIED_FILE),
                privileged=True).out)
        applied = dict(line.partition("=")[::2] for line in state.get("applied", []))
        self.paths = agent.Paths.remembered(applied)
        getattr(self, f"_{self.action}")(state, applied)

    def _preflight(self, pkg, needs_pod: bool) -> dict:
        """Second round trip, only for a Mac that is about to change: the spec's requirements."""
        p = self.plan
        f = facts.parse(self._step("preflight", render.render(
            "preflight", staged=[p.staged(k) for k in p.packages.values()], group=p.group,
            routes=p.routes if needs_pod else [], pod_url=p.pod_url, run_as=p.run_as,
            sudo_command=p.sudo_command), privileged=p.sudo_command is not None).out)
        self._requirements(f, pkg, needs_pod)
        return f

    def _install(self, state: dict, applied: dict) -> None:
        p, r = self.plan, self.result
        pkg = p.packages.get(r.arch or "")
        if pkg is None:
            raise HostFailed(f"no package for {r.arch}: set agent_pkg_{r.arch}")
        need_install = not r.version_before or _version(r.version_before) < _version(pkg.version)
        need_config = need_install or applied.get("fingerprint") != p.fingerprint or facts.first(state, "hostid") != "1"
        keep = "" if need_install or r.version_before == pkg.version else f"keeps newer {r.version_before}"
        if not need_install and not need_config and facts.first(state, "daemon_pid"):
            r.status, r.reason = "ok", keep or None
            return
        f = self._preflight(pkg, needs_pod=True)
        if need_install:
            self._upload_if_needed(f, pkg)
            res = self._step("install", p.package_script("install", pkg), privileged=True, check=False)
            if res.rc != 0:
                raise HostFailed(self.mask(facts.installer_failure(res.out + res.err)))
        self._configure_step(p.options, self._proxy_change(applied, all_settings=True), p.ca_bundle,
                             p.digests, p.fingerprint)
        self._verify(pkg.version if need_install else r.version_before)
        r.status, r.reason = "changed", self._with_notes(keep)

    def _upgrade(self, state: dict, applied: dict) -> None:
        p, r = self.plan, self.result
        if not r.version_before:
            raise HostFailed("the agent is not installed; roll it out with action install", status="skipped")
        pkg = p.packages.get(r.arch or "")
        if pkg is None:
            raise HostFailed(f"no package for {r.arch}: set agent_pkg_{r.arch}")
        if _version(r.version_before) >= _version(pkg.version):
            r.status, r.reason = "ok", f"already at {r.version_before}"
            return
        f = self._preflight(pkg, needs_pod=bool(p.pod_url))
        self._upload_if_needed(f, pkg)
        res = self._step("upgrade", p.package_script("upgrade", pkg), privileged=True, check=False)
        if res.rc != 0:
            raise HostFailed(self.mask(facts.installer_failure(res.out + res.err)))
        if p.ca_bundle:  # the bundle lives inside the app bundle, which the upgrade replaced
            self._configure_step([], None, p.ca_bundle, {**applied, **p.digests}, applied.get("fingerprint", ""))
        self._verify(pkg.version)
        r.status, r.reason = "changed", self._with_notes(None)

    def _uninstall(self, state: dict, applied: dict) -> None:
        r = self.result
        if not r.version_before and not facts.first(state, "daemon_pid"):
            r.status, r.reason = "ok", "agent already absent"
            return
        hostid = self.paths.hostid_file
        out = facts.parse(self._step("uninstall", self.plan.uninstall_script(
            self.verify_s, hostid, self.book.remove_hostid), privileged=True).out)
        left = out.get("left", [])
        if left:
            raise self._check_failed(f"uninstall left behind: {', '.join(left)}")
        notes = []
        if facts.first(out, "job_listed") == "1":
            notes.append(f"launchd still lists {agent.LABEL} without a process (a known macOS delay, the guide)")
        if facts.first(out, "hostid_left") == "1":
            notes.append(f"hostid kept at {hostid} (set remove_hostid: true to remove it)")
        elif self.book.remove_hostid:
            notes.append(f"hostid removed from {hostid}")
        r.status, r.version_after, r.reason = "changed", None, "; ".join(notes) or None

    def _configure(self, state: dict, applied: dict) -> None:
        p, r = self.plan, self.result
        if not r.version_before:
            raise HostFailed("the agent is not installed; roll it out with action install", status="skipped")
        proxy = self._proxy_change(applied, all_settings=False)
        changed = {k for k, d in p.digests.items() if applied.get(k) != d and k != "proxy"}
        if proxy is not None:
            changed.add("proxy")
        if not changed:
            r.status = "ok"
            return
        self._preflight(None, needs_pod=bool(p.pod_url))
        options = [o for o in p.options if o.partition("=")[0] in changed]
        self._configure_step(options, proxy, p.ca_bundle if "ca_bundle" in changed else None,
                             {**applied, **p.digests}, applied.get("fingerprint", ""))
        self._verify(r.version_before)
        r.status, r.reason = "changed", self._with_notes("changed: " + ", ".join(sorted(changed)))

    def _scan(self, state: dict, applied: dict) -> None:
        """The guide's signals only: the ControlId printed, then the request (or its delay) in the
        log. Completion is reported only when the admin gave scan_done_pattern."""
        r, book = self.result, self.book
        if not r.version_before:
            raise HostFailed("the agent is not installed", status="skipped")
        res = self._step("scan", render.render(
            "scan", ctl=f"{agent.APP_BIN}/cloudagentctl.sh", scan_type=book.scan_type,
            cputhrottle=book.scan_cputhrottle, paths=self.paths, wait_s=book.scan_timeout),
            privileged=True, check=False)
        out = facts.parse(res.out)
        control = next((l.split(": ", 1)[1] for l in res.out.splitlines() if l.startswith("On-Demand-Request")), None)
        if res.rc != 0 or not control:
            said = self.mask((res.err or res.out).strip().splitlines()[-1:] or [f"exit {res.rc}"])
            raise self._check_failed(f"scan request refused by cloudagentctl.sh: {said[0] if isinstance(said, list) else said}"
                                     + (f" (is the agent activated for {book.scan_type.upper()}?)" if res.rc else ""))
        events = [e for e in agentlog.parse("\n".join(out.get("log_line", []))) if e.control_id == control]
        kinds = {e.kind for e in events}
        if "scan_request" not in kinds and "scan_delayed" not in kinds:
            raise self._check_failed(f"scan {control}: the agent did not log the request within {book.scan_timeout}s")
        state_text = "delayed behind an interval scan" if "scan_delayed" in kinds else "requested"
        if book.scan_done_pattern:
            pattern = re.compile(book.scan_done_pattern.replace("{control_id}", re.escape(control)))
            if not self._wait_for(pattern, facts.first(out, "since"), book.scan_timeout):
                raise self._check_failed(f"scan {control} {state_text}, but scan_done_pattern did not appear "
                                         f"within {book.scan_timeout}s")
            state_text = "done (scan_done_pattern seen)"
        r.status, r.reason = "ok", f"scan {control} {state_text}"

    def _configure_step(self, options: list[str], proxy: str | None, ca: str | None, digests: dict[str, str],
                        fingerprint: str) -> None:
        """Apply OPTIONS and remember on the Mac what was applied, and where the agent now writes."""
        before = self.paths
        self.paths = before.with_options(dict(o.split("=", 1) for o in options))
        move = (before.hostid_file, self.paths.hostid_file) if before.hostid_file != self.paths.hostid_file else None
        self._step("configure", self.plan.configure_script(
            options, proxy, ca, self.plan.marker(digests, fingerprint, self.paths), move), privileged=True)

    def _proxy_change(self, applied: dict, all_settings: bool) -> str | None:
        """The proxy file to write, "" to remove the one fleetctl wrote, None to leave it alone
        (a proxy file fleetctl never wrote, e.g. an MDM's, is not fleetctl's to remove)."""
        p = self.plan
        if p.proxy_content:
            return p.proxy_content if all_settings or applied.get("proxy") != p.digests.get("proxy") else None
        wrote = applied.get("proxy") not in (None, p.digests.get("proxy"))
        return "" if wrote else None

    def _with_notes(self, reason: str | None) -> str | None:
        notes = [n for n in (reason, *self.notes) if n]
        return "; ".join(notes) or None

    def _upload_if_needed(self, f: dict, pkg) -> None:
        if pkg.sha256 not in f.get("staged", []):
            self._upload(pkg)

    def _privilege(self, f: dict) -> None:
        p = self.plan
        privilege = facts.first(f, "privilege")
        if privilege == "root":
            self.mode = ssh.SHELL
        elif privilege == "nopasswd":
            self.mode = ssh.SUDO_NOPASSWD
        elif privilege == "password":
            if not p.become_secret:
                raise HostFailed("sudo asks for a password and none is configured: set fleetctl_become_secret "
                                 "for this host and store it with `fleetctl secrets set NAME`")
            self.mode, self.password = ssh.SUDO_PASSWORD, self.secrets.values[p.become_secret]
        else:
            raise HostFailed(f"{p.host.user} cannot use sudo on this Mac")

    def _check_failed(self, reason: str) -> HostFailed:
        """A step ran (exit 0) but what it found fails a check: the report marks that step failed."""
        if self.result.steps:
            self.result.steps[-1].status = "failed"
        return HostFailed(reason)

    def _requirements(self, f: dict, pkg, needs_pod: bool) -> None:
        """The spec's host requirements; checked before anything on the Mac changes."""
        p, r = self.plan, self.result
        if r.arch not in ("arm64", "x86_64"):
            raise self._check_failed(f"not a Mac we know: uname -m says {r.arch!r}")
        memory = self.memsize
        if memory is not None and memory < agent.MIN_MEMORY:
            raise self._check_failed(f"memory {memory >> 20} MB is below the agent's 512 MB minimum")
        disk = facts.number(f, "disk_free_kb")
        if disk is not None and disk < agent.MIN_DISK_KB:
            raise self._check_failed(f"free disk {disk // 1024} MB is below the agent's 100 MB minimum")
        if facts.first(f, "group_exists") != "1":
            raise self._check_failed(f"group {p.group!r} does not exist on this Mac; create it or change agent: Group")
        if p.run_as and facts.first(f, "user_exists") != "1":
            raise self._check_failed(f"user {p.run_as!r} does not exist on this Mac; create it or change agent: User")
        if p.sudo_command and facts.first(f, "sudo_command_found") != "1":
            raise self._check_failed(f"UseSudo is 1 but SudoCommand {p.sudo_command!r} is not on this Mac; the agent's "
                                     "data collection would fail; install it or change agent: SudoCommand")
        if p.sudo_command and p.run_as not in (None, "root") and facts.first(f, "run_as_nopasswd") != "1":
            raise self._check_failed(f"UseSudo is 1 but user {p.run_as!r} may not run sudo without a password "
                                     f"(sudo -l -U {p.run_as}); give it NOPASSWD or set UseSudo: 0")
        if needs_pod and not facts.first(f, "pod_reached"):
            errors = "; ".join(f.get("pod_error", [])) or "no answer"
            raise self._check_failed(self.mask(f"cannot reach the Qualys platform over HTTPS: {errors}"))
        self.notes += f.get("pod_note", [])

    def _upload(self, pkg) -> None:
        p = self.plan
        self.events.step(p.host.name, "upload")
        started = time.monotonic()
        command = render.render("upload", staged_dir=p.staged_dir, staged=p.staged(pkg))
        with open(pkg.path, "rb") as source:
            try:
                res = self.conn.stream(command, source, self.events.sent)
            except ssh.Unreachable as e:
                raise HostFailed(f"upload: {e}") from None
            finally:
                self.result.uploaded_bytes = self.conn.bytes_sent
        self.result.steps.append(Step("upload", "ok" if res.rc == 0 else "failed",
                                      round(time.monotonic() - started, 3), f"{pkg.size} bytes"))
        if res.rc != 0:
            raise HostFailed(f"upload: {res.err.strip() or f'exit {res.rc}'}")

    def _verify(self, version: str) -> None:
        """Healthy as the guide defines it: the receipt's version, the launchd job with a PID, the
        hostid under HostIdSearchDir, no Error/Fatal record since the run began (and, only when
        the admin asked, checkin_pattern in the log)."""
        p, r, since = self.plan, self.result, self.since
        out = self._step("verify", render.render(
            "verify", since=since, paths=self.paths, wait_s=self.verify_s, package_id=agent.PACKAGE_ID,
            label=agent.LABEL, ca_bundle_path=agent.CA_BUNDLE if p.ca_bundle else None, lines=LOG_LINES),
            privileged=True).out
        v = facts.parse(out)
        lines = v.get("log_line", [])
        events = agentlog.parse("\n".join(lines))
        r.log = [self.mask(line) for line in lines[-LOG_EXCERPT:]]
        problems = agentlog.at_least(events, "Error")
        r.version_after = facts.first(v, "version") or None
        if r.version_after != version:
            raise self._check_failed(f"verify: installed version is {r.version_after}, expected {version}")
        if not facts.first(v, "daemon_pid"):
            raise self._check_failed(f"verify: the agent daemon is not running (last exit {facts.first(v, 'daemon_exit', '?')})"
                                     + (f"; log: {self.mask(agentlog.first_line(problems[-1]))}" if problems else ""))
        if problems:
            raise self._check_failed("verify: the agent logged since the run began: "
                                     + " | ".join(self.mask(agentlog.first_line(e)) for e in problems[-3:]))
        if facts.first(v, "hostid") != "1":
            raise self._check_failed(f"verify: no hostid at {self.paths.hostid_file} after {self.verify_s}s: the "
                                     "platform assigns it when the agent first reaches it; check the network and proxy")
        if p.ca_bundle and facts.first(v, "ca_sha256") != hashlib.sha256(p.ca_bundle.encode()).hexdigest():
            raise self._check_failed(f"verify: {agent.CA_BUNDLE} is not the proxy CA bundle fleetctl applied")
        pattern = self.book.checkin_pattern
        if pattern and not any(pattern.search(e.message) for e in events) and \
                not self._wait_for(pattern, since, self.verify_s):
            raise self._check_failed(f"verify: checkin_pattern {pattern.pattern!r} not in the agent log within "
                                     f"{self.verify_s}s")

    def _wait_for(self, pattern: re.Pattern, since: str, timeout_s: int) -> bool:
        """Poll (bounded) the agent's records since SINCE for a pattern the admin configured."""
        deadline = time.monotonic() + timeout_s
        script = render.render("log_since", since=since, paths=self.paths, lines=LOG_LINES)
        while True:
            lines = self._step("wait-log", script, privileged=True).out
            if any(pattern.search(e.message) for e in agentlog.parse(lines)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".") if x.isdigit())


class Aborted(Exception):
    """Second Ctrl-C: the host stops between steps and stays pending for `fleetctl resume`."""


def run_all(plans: list[HostPlan], book: Playbook, secrets: Secrets, forks: int, accept_new: bool,
            events: Events, stop: threading.Event, abort: threading.Event,
            on_interrupt: Callable[[int], None] = lambda n: None) -> list[HostResult | None]:
    """Run PLANS with at most FORKS at once. Once STOP is set no new host starts (its result is
    None); ABORT makes running hosts stop after their current step. Ctrl-C sets them in turn."""
    masker = secrets.masker()
    runs = [HostRun(p, book, secrets, masker, accept_new, events, abort) for p in plans]

    def go(run: HostRun) -> HostResult | None:
        return None if stop.is_set() else run.run()

    with ThreadPoolExecutor(max_workers=max(1, forks), thread_name_prefix="host") as pool:
        futures = [pool.submit(go, r) for r in runs]
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
