"""Steps several actions share: preflight, configure, verify, waiting for an admin's pattern."""
from __future__ import annotations

import hashlib
import re
import time
from typing import Callable

from fleetctl import agent, agentlog, facts, relay, render, ssh
from fleetctl.engine import HostFailed, Session
from fleetctl.plan import HostPlan, Package
from fleetctl.results import Step

LOG_EXCERPT = 20  # agent log lines kept per Mac for the reports
LOG_LINES = 2000  # agent records read back since the run began
POLL_S = 2.0  # between reads of the log while waiting for an admin's pattern


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".") if x.isdigit())


def package_for(s: Session) -> Package:
    pkg = s.plan.packages.get(s.result.arch or "")
    if pkg is None:
        raise HostFailed(f"no package for {s.result.arch}: set agent_pkg_{s.result.arch}")
    return pkg


def require_agent(s: Session, hint: str = "; roll it out with action install") -> None:
    if not s.result.version_before:
        raise HostFailed(f"the agent is not installed{hint}", status="skipped")


WITH_PROBE = "read with the probe"  # a preflight's step detail when the probe carried it


def preflight_script(p: HostPlan, needs_pod: bool) -> str:
    return render.render("preflight", staged=[p.staged(k) for k in p.packages.values()], group=p.group,
                         routes=p.routes if needs_pod else [], pod_url=p.pod_url, run_as=p.run_as,
                         sudo_command=p.sudo_command)


def preflight(s: Session, pkg: Package | None, needs_pod: bool) -> dict:
    """Only for a Mac that is about to change: the spec's requirements. A second round trip,
    unless the probe already read them (a Mac with no agent: install's with_probe)."""
    p = s.plan
    if facts.first(s.probe, "preflight") == "with-probe":
        f = s.probe
        s.result.steps.append(Step("preflight", "ok", 0.0, WITH_PROBE))
    else:
        f = facts.parse(s.step("preflight", preflight_script(p, needs_pod), privileged=p.sudo_command is not None).out)
    _requirements(s, f, needs_pod)
    return f


def _requirements(s: Session, f: dict, needs_pod: bool) -> None:
    """The spec's host requirements; checked before anything on the Mac changes."""
    p, r = s.plan, s.result
    if r.arch not in ("arm64", "x86_64"):
        raise s.check_failed(f"not a Mac we know: uname -m says {r.arch!r}")
    if s.memsize is not None and s.memsize < agent.MIN_MEMORY:
        raise s.check_failed(f"memory {s.memsize >> 20} MB is below the agent's 512 MB minimum")
    disk = facts.number(f, "disk_free_kb")
    if disk is not None and disk < agent.MIN_DISK_KB:
        raise s.check_failed(f"free disk {disk // 1024} MB is below the agent's 100 MB minimum")
    if facts.first(f, "group_exists") != "1":
        raise s.check_failed(f"group {p.group!r} does not exist on this Mac; create it or change agent: Group")
    if p.run_as and p.run_as != "root" and facts.first(f, "user_exists") != "1":
        raise s.check_failed(f"user {p.run_as!r} does not exist on this Mac; create it or change agent: User")
    if p.sudo_command and facts.first(f, "sudo_command_found") != "1":
        raise s.check_failed(f"UseSudo is 1 but SudoCommand {p.sudo_command!r} is not on this Mac; the agent's "
                             "data collection would fail; install it or change agent: SudoCommand")
    if p.sudo_command and p.run_as not in (None, "root") and facts.first(f, "run_as_nopasswd") != "1":
        raise s.check_failed(f"UseSudo is 1 but user {p.run_as!r} may not run sudo without a password "
                             f"(sudo -l -U {p.run_as}); give it NOPASSWD or set UseSudo: 0")
    if needs_pod and not facts.first(f, "pod_reached"):
        errors = "; ".join(f.get("pod_error", [])) or "no answer"
        raise s.check_failed(s.mask(f"cannot reach the Qualys platform over HTTPS: {errors}"), transient=True)
    s.notes += f.get("pod_note", [])


Judge = Callable[[Session, ssh.Result], None]


def apply(s: Session, parts: list[tuple[str, str, Judge]]) -> None:
    """Run the privileged PARTS (name, script, judge) over one channel (Session.steps): one sudo
    and one round trip for install, configure and verify together. Each part is still its own
    step in the report, and is judged in turn; the first that fails stops the rest on the Mac."""
    results = s.steps([(name, script) for name, script, _ in parts], privileged=True)
    for (name, _, judge), res in zip(parts, results):
        judge(s, res)
    if len(results) < len(parts):  # a part failed without saying so: never report the rest as done
        raise HostFailed(f"{parts[len(results)][0]}: did not run (the step before it ended the channel)")


def install_package(s: Session, step: str, pkg: Package) -> tuple[str, str, Judge]:
    """`install` (installer) or `upgrade` (qagent_upgrade.sh) of the staged package."""
    return step, s.plan.package_script(step, pkg), _installed


def _installed(s: Session, res: ssh.Result) -> None:
    if res.rc != 0:
        raise HostFailed(s.mask(facts.installer_failure(res.out + res.err)))


def configure(s: Session, options: list[str], proxy: str | None, ca: str | None, digests: dict[str, str],
              fingerprint: str) -> tuple[str, str, Judge]:
    """Apply OPTIONS and remember on the Mac what was applied, and where the agent now writes."""
    before = s.paths
    s.paths = before.with_options(dict(o.split("=", 1) for o in options))
    move = (before.hostid_file, s.paths.hostid_file) if before.hostid_file != s.paths.hostid_file else None
    return "configure", s.plan.configure_script(
        options, proxy, ca, s.plan.marker(digests, fingerprint, s.paths), move), _configured


def _configured(s: Session, res: ssh.Result) -> None:
    if res.rc != 0:
        raise HostFailed(f"configure: {s.failure(res)}")


def proxy_change(s: Session, all_settings: bool) -> str | None:
    """The proxy file to write, "" to remove the one fleetctl wrote, None to leave it alone
    (a proxy file fleetctl never wrote, e.g. an MDM's, is not fleetctl's to remove)."""
    p, applied = s.plan, s.applied
    if p.proxy_content:
        return p.proxy_content if all_settings or applied.get("proxy") != p.digests.get("proxy") else None
    wrote = applied.get("proxy") not in (None, p.digests.get("proxy"))
    return "" if wrote else None


def verify(s: Session, expected_version: str) -> tuple[str, str, Judge]:
    """Healthy as the guide defines it: the receipt's version, the launchd job with a PID, the
    hostid under HostIdSearchDir, no Error/Fatal record since the run began (and, only when the
    admin asked, checkin_pattern in the log). Rendered with the paths configure leaves."""
    p, book = s.plan, s.book
    script = render.render(
        "verify", since=s.since, paths=s.paths, wait_s=book.verify_timeout, package_id=agent.PACKAGE_ID,
        label=agent.LABEL, ca_bundle_path=agent.CA_BUNDLE if p.ca_bundle else None, lines=LOG_LINES)
    return "verify", script, lambda s, res: _verified(s, res, expected_version)


def _verified(s: Session, res: ssh.Result, expected_version: str) -> None:
    p, r, book = s.plan, s.result, s.book
    if res.rc != 0:
        raise HostFailed(f"verify: {s.failure(res)}")
    v = facts.parse(res.out)
    lines = v.get("log_line", [])
    events = agentlog.parse("\n".join(lines))
    r.log = [s.mask(line) for line in lines[-LOG_EXCERPT:]]
    problems = agentlog.at_least(events, "Error")
    r.version_after = facts.first(v, "version") or None
    if r.version_after != expected_version:
        raise s.check_failed(f"verify: installed version is {r.version_after}, expected {expected_version}")
    if not facts.first(v, "daemon_pid"):
        raise s.check_failed(f"verify: the agent daemon is not running (last exit {facts.first(v, 'daemon_exit', '?')})"
                             + (f"; log: {s.mask(agentlog.first_line(problems[-1]))}" if problems else ""))
    # No hostid: the agent has not reached the platform yet (the guide), like a Mac that left the
    # network or the VPN right after the install: a campaign tries it again (transient).
    reached = facts.first(v, "hostid") == "1"
    if problems:
        raise s.check_failed("verify: the agent logged since the run began: "
                             + " | ".join(s.mask(agentlog.first_line(e)) for e in problems[-3:]), transient=not reached)
    if not reached:
        raise s.check_failed(f"verify: no hostid at {s.paths.hostid_file} after {book.verify_timeout}s: the "
                             "platform assigns it when the agent first reaches it; check the network and proxy",
                             transient=True)
    if p.ca_bundle and facts.first(v, "ca_sha256") != hashlib.sha256(p.ca_bundle.encode()).hexdigest():
        raise s.check_failed(f"verify: {agent.CA_BUNDLE} is not the proxy CA bundle fleetctl applied")
    pattern = book.checkin_pattern
    if pattern and not any(pattern.search(e.message) for e in events) and \
            not wait_for(s, pattern, s.since, book.verify_timeout):
        raise s.check_failed(f"verify: checkin_pattern {pattern.pattern!r} not in the agent log within "
                             f"{book.verify_timeout}s")


def wait_for(s: Session, pattern: re.Pattern, since: str, timeout_s: int) -> bool:
    """Poll (bounded) the agent's records since SINCE for a pattern the admin configured."""
    deadline = time.monotonic() + timeout_s
    script = render.render("log_since", since=since, paths=s.paths, lines=LOG_LINES)
    while True:
        lines = s.step("wait-log", script, privileged=True).out
        if any(pattern.search(e.message) for e in agentlog.parse(lines)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def package_scripts(plan: HostPlan, step: str) -> list[tuple[str, str]]:
    """What `fleetctl plan` shows for each architecture's package (and, at a site, the relay's part)."""
    parts = [(f"{step} ({arch})", f"# if the Mac is {arch}: {pkg.path.name} version {pkg.version} sha256 "
              f"{pkg.sha256}, uploaded to {plan.staged(pkg)} unless already there\n" + plan.package_script(step, pkg))
             for arch, pkg in plan.packages.items()]
    if plan.site and plan.packages:
        pkg = next(iter(plan.packages.values()))
        where = "# site {}: the first Mac to need the package relays it, the others fetch it (--no-relay: never)\n"
        parts.append((f"relay-open (site {plan.site})", where.format(plan.site) + render.render(
            "relay_open", sources="<the site's other Macs>", copy=relay.copy_path(plan, pkg), staged=plan.staged(pkg),
            sha256=pkg.sha256, public_key="<one-time public key>", marker=relay.MARKER + "<run id>")))
        parts.append((f"fetch from the relay (site {plan.site})", render.render(
            "relay_fetch", staged_dir=plan.staged_dir, staged=plan.staged(pkg), private_key="<one-time key>",
            known_hosts_line="<relay address> <relay host key>", host_key_type="<host key type>", port=22,
            user="<login user>", address="<relay address>", sha256=pkg.sha256)))
        parts.append((f"relay-close (site {plan.site})", relay.close_script(plan)))
    return parts
