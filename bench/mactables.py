"""bench/macwork.py's counts as the tables BENCHMARKS.md keeps, and a Mac's process tree as text."""
from __future__ import annotations

def table(runs: dict[str, dict]) -> str:
    """RUNS: label -> a Watcher result. The per-Mac means, one row per run."""
    rows = ["| run | processes | execs | sudo | macOS shims | Mac CPU s | of it agent daemon | SSH connections | "
            "SSH channels | bytes hashed | hash runs | python3 bytes read | TLS handshakes | of them check-ins |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, result in runs.items():
        p = result["summary"]["per_mac"]
        rows.append(f"| {label} | {p['processes']:g} | {p['execs']:g} | {p['sudo']:g} | {p['shims']:g} | "
                    f"{p['cpu_s']} | {p['daemon_cpu_s']} | {p['ssh_connections']:g} | {p['channels']:g} | "
                    f"{p['bytes_hashed'] / 1e6:.2f} MB | {p['hash_runs']:g} | {p['python_bytes_read'] / 1e6:.2f} MB | "
                    f"{p['tls_handshakes']:g} | {p['agent_checkins']:g} |")
    rows += ["",
             "processes: forks on the Mac (sshd's own included: 3 per SSH connection); execs: programs started; "
             "sudo: processes that ran sudo; macOS shims: the lab's stand-ins for macOS commands (each a python3 -S, "
             "10-15 ms of CPU, a millisecond or two on a real Mac); Mac CPU: all the Mac's processes, the agent's "
             "daemon included; bytes hashed: read by hashing programs (openssl dgst, sha1sum, shasum...), less their "
             "fixed reads; python3 bytes read: by python3 processes that are not shims (Ansible's modules, the "
             "agent's configuration tool): Ansible's copy module hashes the upload there (sha1 and md5) and its "
             "stat module the staged file on a rerun (sha1), in-process, so not in bytes hashed; TLS handshakes: "
             "TCP connections the Mac opened (all HTTPS to the pod here: preflight curl and the agent's check-ins)."]
    notes = []
    for label, result in runs.items():
        if result.get("lost_event_batches"):
            notes.append(f"{label}: {result['lost_event_batches']} batches of kernel events lost: counts are low")
    return "\n".join(rows + notes)


def programs_table(result: dict, top: int = 25) -> str:
    rows = ["| program (last exec'd) | processes per Mac | CPU ms per Mac | bytes read per Mac |", "|---|---|---|---|"]
    for name, r in list(result["summary"]["programs_per_mac"].items())[:top]:
        rows.append(f"| {name} | {r['processes']} | {r['cpu_ms']} | {r['bytes_read']:,} |")
    return "\n".join(rows)


def format_tree(tree: list[dict], width: int = 150) -> str:
    out = []
    for i, channel in enumerate(tree, 1):
        first = channel["channel"]
        out.append(f"channel {i}: {first[:width]}")
        for row in channel["processes"]:
            execs = " => ".join(e[:90] for e in row["execs"]) or "(fork, no exec)"
            out.append(f"  {'  ' * row['depth']}{row['program']:<16} {row['cpu_ms']:>7.1f} ms "
                       f"{row['bytes_read']:>10,} B read  {execs[:width]}")
    return "\n".join(out)
