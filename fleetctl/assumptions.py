"""What fleetctl assumes about a Mac, each assumption checked against the raw output it parses.

Every check gets the raw sections `fleetctl doctor` captured (templates/doctor.sh.j2) and
says `ok`, `differs` (the output is not the shape fleetctl's parser expects: the excerpt
shows where) or `missing` (the command or file is not there), and which fleetctl feature
depends on it. Shapes are the ones the vendor guide and real macOS give.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from fleetctl import agent, agentlog

Sections = dict[str, tuple[int, str]]  # name -> (exit status, output)
SW_VERS = re.compile(r"^(ProductName:\t\t\S.*|ProductVersion:\t\t\d+(\.\d+)+|BuildVersion:\t\t\w+)$")
PKG_INFO = [re.compile(p) for p in (r"^package-id: com\.qualys\.cloud-agent$", r"^version: \d+\.\d+\.\d+\.\d+$",
                                    r"^volume: ", r"^location: ", r"^install-time: \d+$")]
DIGEST = hashlib.sha256(b"fleetctl").hexdigest()
MAX_SKEW_S = 60
CREDENTIALS = re.compile(r"://[^/;\"\s]*@")  # greedy: up to the last @, whatever the password holds


@dataclass
class Finding:
    name: str
    verdict: str  # ok | differs | missing
    feature: str  # what in fleetctl depends on it
    excerpt: str = ""  # the output that did not match (never a secret)


def _first_bad(lines: list[str], good) -> str | None:
    return next((line for line in lines if not good(line)), None)


def check(sections: Sections, arch_hint: str | None, controller_epoch: float | None, pod_checked: bool) -> list[Finding]:
    """Every assumption, in the order an admin reads them."""
    s = sections
    found: list[Finding] = []

    def add(name: str, feature: str, key: str, good, missing_ok: str | None = None) -> None:
        if key not in s:
            found.append(Finding(name, "missing", feature, "needs root: set fleetctl_become_secret"))
            return
        rc, out = s[key]
        if rc in (126, 127):  # the shell could not find or run the command
            found.append(Finding(name, "missing", feature, out.strip()[:200]))
            return
        problem = good(rc, out)
        found.append(Finding(name, "differs" if problem else "ok", feature, problem or ""))

    add("sw_vers", "probe: macOS version when sysctl kern.osproductversion is absent", "sw_vers",
        lambda rc, out: None if rc == 0 and out.strip() and all(SW_VERS.match(l) for l in out.splitlines())
        else _first_bad(out.splitlines(), SW_VERS.match) or f"exit {rc}")
    add("sysctl kern.osproductversion", "probe: macOS version", "sysctl_version",
        lambda rc, out: None if re.fullmatch(r"\d+(\.\d+)+", out.strip()) else out.strip()[:120] or f"exit {rc}")
    add("uname -m", "which package (agent_pkg_arm64 / agent_pkg_x86_64) a Mac gets", "uname_m",
        lambda rc, out: None if out.strip() in ("arm64", "x86_64") else out.strip()[:120])
    add("sysctl hw.memsize", "preflight: the 512 MB memory requirement", "sysctl_memsize",
        lambda rc, out: None if out.strip().isdigit() else out.strip()[:120] or f"exit {rc}")
    add("sysctl hw.optional.arm64", "probe: Apple silicon, even under Rosetta", "sysctl_arm64",
        lambda rc, out: None if out.strip() in ("1", "0") or (rc != 0 and (arch_hint or "") != "arm64")
        else out.strip()[:120] or f"exit {rc}")
    add("df -k /", "preflight: the 100 MB free disk requirement", "df", _df)
    add("id -u", "probe: root login or sudo", "id", lambda rc, out: None if out.strip().isdigit() else out[:120])
    add("sudo -n", "probe: the sudo mode (NOPASSWD, password, none)", "sudo_n", _sudo)
    for tool, feature in (("openssl", "install/upgrade: the package's sha256 checked on the Mac"),
                          ("curl", "preflight: HTTPS reachability of the platform"),
                          ("dscl", "preflight: the run-as Group exists")):
        rc, out = s.get(f"command_{tool}", (1, ""))
        present = rc == 0 and out.strip().endswith("/" + tool)
        found.append(Finding(tool, "ok" if present else "missing", feature,
                             "" if present else f"command -v {tool}: not found"))
    add("openssl dgst -sha256 -r", "install/upgrade: the package's sha256 checked on the Mac", "openssl_dgst",
        lambda rc, out: None if out.split()[:1] == [DIGEST] else out.strip()[:120] or f"exit {rc}")
    add("curl --version", "preflight: HTTPS reachability of the platform", "curl_version",
        lambda rc, out: None if out.startswith("curl ") else out.strip()[:120])
    add("dscl . -read /Groups/wheel PrimaryGroupID", "preflight: the run-as Group exists", "dscl",
        lambda rc, out: None if re.search(r"^PrimaryGroupID: \d+$", out, re.M) else out.strip()[:120] or f"exit {rc}")
    found.append(_clock(s.get("clock"), controller_epoch))
    found += _requirements(s)
    if pod_checked:
        add("platform reachable over HTTPS", "preflight and the agent's check-in", "reach", _reach)
    found += _agent(s)
    return found


def _df(rc: int, out: str) -> str | None:
    lines = out.splitlines()
    if rc == 0 and len(lines) >= 2 and lines[0].startswith("Filesystem") and len(lines[1].split()) >= 4 \
            and lines[1].split()[3].isdigit():
        return None
    return (lines[1] if len(lines) > 1 else out.strip())[:160] or f"exit {rc}"


def _sudo(rc: int, out: str) -> str | None:
    if rc == 0 or "a password is required" in out or "may not run sudo" in out or "is not in the sudoers" in out:
        return None
    return out.strip()[:160] or f"exit {rc}"


def _reach(rc: int, out: str) -> str | None:
    reached = re.search(r"^pod_reached=(.*)$", out, re.M)
    if reached and reached[1]:
        return None
    return "; ".join(re.findall(r"^pod_error=(.*)$", out, re.M))[:300] or "no answer"


def _clock(section: tuple[int, str] | None, controller_epoch: float | None) -> Finding:
    feature = "the journal, --since and the agent-log windows (Mac time vs controller time)"
    if section is None or not section[1].strip().isdigit():
        return Finding("clock", "differs" if section else "missing", feature, (section or (0, ""))[1].strip()[:80])
    if controller_epoch is None:
        return Finding("clock", "ok", feature)
    skew = int(section[1].strip()) - controller_epoch
    if abs(skew) > MAX_SKEW_S:
        return Finding("clock", "differs", feature, f"the Mac's clock is {abs(skew):.0f} s "
                       f"{'ahead of' if skew > 0 else 'behind'} the controller's")
    return Finding("clock", "ok", feature)


def _requirements(s: Sections) -> list[Finding]:
    out = []
    memory = s.get("sysctl_memsize", (1, ""))[1].strip()
    if memory.isdigit():
        ok = int(memory) >= agent.MIN_MEMORY
        out.append(Finding("memory >= 512 MB", "ok" if ok else "differs", "the agent's host requirements",
                           "" if ok else f"{int(memory) >> 20} MB"))
    lines = s.get("df", (1, ""))[1].splitlines()
    if len(lines) > 1 and len(lines[1].split()) >= 4 and lines[1].split()[3].isdigit():
        free = int(lines[1].split()[3])
        ok = free >= agent.MIN_DISK_KB
        out.append(Finding("free disk >= 100 MB", "ok" if ok else "differs", "the agent's host requirements",
                           "" if ok else f"{free // 1024} MB free"))
    return out


def _agent(s: Sections) -> list[Finding]:
    """Assumptions about the installed agent; none when the receipt says it is not installed."""
    if "pkgutil" not in s:
        return [Finding("agent state", "missing", "status, verify, upgrade, uninstall",
                        "needs root: set fleetctl_become_secret")]
    rc, out = s["pkgutil"]
    if rc != 0:
        return [Finding("agent installed", "ok", "install: a Mac without the agent gets it", "not installed")]
    found = []
    lines = out.splitlines()
    bad = None if len(lines) >= 5 and all(p.match(l) for p, l in zip(PKG_INFO, lines)) else \
        next((l for p, l in zip(PKG_INFO, lines) if not p.match(l)), out.strip()[:160])
    found.append(Finding("pkgutil --pkg-info (receipt)", "differs" if bad else "ok",
                         "the installed version: install, upgrade, verify, status", bad or ""))
    rc, out = s.get("launchctl", (1, ""))
    if rc != 0:
        found.append(Finding("launchd job", "missing", "verify and status: the daemon runs", out.strip()[:160]))
    else:
        pid = re.search(r'^\s*"PID" = (\d+);$', out, re.M)
        last_exit = re.search(r'^\s*("LastExitStatus" = -?\d+;)$', out, re.M)
        found.append(Finding("launchd job and PID", "ok" if pid else "differs", "verify and status: the daemon runs",
                             "" if pid else (last_exit[1] if last_exit else out.strip()[:160])))
    listed = s.get("tool_paths", (1, ""))[1]
    tools = [path for path in agent.TOOL_PATHS if re.search(rf"^-\S*x\S* .* {re.escape(path)}$", listed, re.M)]
    found.append(Finding("configuration tool", "ok" if tools else "missing", "install and configure: provisioning",
                         "" if tools else "neither " + " nor ".join(agent.TOOL_PATHS)))
    rc, out = s.get("hostid", (1, ""))
    size = out.split()[4] if rc == 0 and len(out.split()) > 4 else "0"
    found.append(Finding("hostid file", "ok" if size.isdigit() and int(size) > 0 else "missing",
                         "verify and status: provisioned and known to the platform", "" if rc == 0 else out.strip()[:160]))
    found.append(_log(s.get("log", (1, "")), s.get("log_source", (0, ""))[1]))
    found.append(_proxy_file(s.get("proxy_file"), s.get("proxy_file_mode")))
    return found


def _log(section: tuple[int, str], source: str) -> Finding:
    feature = "verify and status: Error/Fatal lines in the documented format"
    rc, out = section
    lines = [l for l in out.splitlines() if l.strip()]
    if not lines:
        return Finding("agent log format", "missing", feature, f"no records ({source.strip()})")
    if source.startswith("syslog"):
        bad = _first_bad(lines, lambda l: _json_record(l))
    else:
        bad = _first_bad(lines, lambda l: bool(agentlog.LINE.match(l)) or l.startswith((" ", "\t")))
    return Finding("agent log format", "differs" if bad else "ok", feature, (bad or "")[:200])


def _json_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and ("eventMessage" in record or "count" in record)


def _proxy_file(content: tuple[int, str] | None, mode: tuple[int, str] | None) -> Finding:
    feature = "the agent's proxy file (configure, status)"
    if content is None or content[0] != 0:
        return Finding("proxy file", "ok", feature, "none: direct connection")
    problem = agent.proxy_file_problem(content[1])
    fields = (mode or (1, ""))[1].split()
    if not problem and (len(fields) < 4 or fields[0][:10] != "-rw-rw----" or fields[2] != "0"):
        problem = f"owner/mode: {' '.join(fields[:4])} (the guide: root, 660)"
    return Finding("proxy file", "differs" if problem else "ok", feature, CREDENTIALS.sub("://***@", problem or ""))
