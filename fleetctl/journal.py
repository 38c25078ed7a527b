"""The run journal (SQLite): every run, host and step transition, so any run can be resumed.

It holds no secrets: reasons and step details are masked before they get here.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fleetctl.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, action TEXT, playbook TEXT, inventory TEXT, lim TEXT, extra TEXT, forks INTEGER,
  state TEXT, started REAL, finished REAL, pid INTEGER, note TEXT);
CREATE TABLE IF NOT EXISTS hosts (
  run_id TEXT, name TEXT, wave INTEGER, status TEXT, reason TEXT, result TEXT, updated REAL,
  PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS events (
  run_id TEXT, name TEXT, step TEXT, state TEXT, at REAL);
CREATE TABLE IF NOT EXISTS relays (
  run_id TEXT, name TEXT, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS progress (
  run_id TEXT, at REAL, converged INTEGER, pending INTEGER, failed INTEGER);
CREATE TABLE IF NOT EXISTS platform (
  run_id TEXT, name TEXT, agent_uuid TEXT, state TEXT, detail TEXT, updated REAL, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS identities (
  inventory TEXT, name TEXT, serial TEXT, hardware_uuid TEXT, ether TEXT, host_key TEXT, address TEXT,
  first_seen REAL, last_seen REAL, PRIMARY KEY (inventory, name));
"""
# Columns added since the first schema: a journal written by an older fleetctl gains them.
COLUMNS = {
    "runs": {"until_ts": "REAL", "retry_every": "INTEGER"},
    "hosts": {"attempts": "INTEGER DEFAULT 0", "first_attempt": "REAL", "last_attempt": "REAL", "last_seen": "REAL",
              "converged_at": "REAL", "next_retry": "REAL"},
}
DONE = ("ok", "changed", "skipped")
ACTIVE = ("running",)


def default_path() -> Path:
    base = os.environ.get("FLEETCTL_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "fleetctl")
    return Path(base) / "journal.db"


@dataclass
class Run:
    id: str
    action: str
    playbook: str
    inventory: str
    limit: str | None
    extra: list[str]
    forks: int
    state: str
    started: float
    finished: float | None
    pid: int | None
    note: str | None
    until: float | None = None  # a campaign's deadline (epoch); None: one pass
    retry_every: int | None = None  # a campaign's base retry interval, seconds


@dataclass
class Attempts:
    """When a Mac was tried and seen in a run (epoch seconds; None: not yet)."""

    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float | None = None
    last_seen: float | None = None
    converged_at: float | None = None
    next_retry: float | None = None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


class Journal:
    def __init__(self, path: Path | None = None):
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        for table, columns in COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self.lock = threading.Lock()

    def _write(self, sql: str, args: tuple) -> None:
        with self.lock:
            self.db.execute(sql, args)

    def start(self, run_id: str, action: str, playbook: Path, inventory: Path, limit: str | None,
              extra: tuple[str, ...], forks: int, hosts: list[tuple[str, int]], resume: bool = False,
              until: float | None = None, retry_every: int | None = None) -> None:
        """Record the run and its hosts, refusing if a live run already works on any of them."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                names = {h for h, _ in hosts}
                for other_id, pid in self.db.execute(
                        "SELECT id, pid FROM runs WHERE state = 'running' AND id != ?", (run_id,)).fetchall():
                    if not _alive(pid):
                        continue
                    busy = {n for (n,) in self.db.execute("SELECT name FROM hosts WHERE run_id = ?", (other_id,))}
                    if busy & names:
                        raise UsageError(f"run {other_id} (pid {pid}) is working on {len(busy & names)} of these "
                                         f"hosts, e.g. {sorted(busy & names)[0]}; wait for it or stop it first")
                if resume:
                    self.db.execute("UPDATE runs SET state = 'running', pid = ?, finished = NULL WHERE id = ?",
                                    (os.getpid(), run_id))
                else:
                    self.db.execute(
                        "INSERT INTO runs (id, action, playbook, inventory, lim, extra, forks, state, started, finished,"
                        " pid, note, until_ts, retry_every) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                            run_id, action, str(playbook.resolve()), str(inventory.resolve()), limit, json.dumps(extra),
                            forks, "running", time.time(), None, os.getpid(), None, until, retry_every))
                    self.db.executemany("INSERT INTO hosts (run_id, name, wave, status, updated) VALUES (?,?,?,?,?)",
                                        [(run_id, n, w, "pending", time.time()) for n, w in hosts])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def step(self, run_id: str, name: str, step: str) -> None:
        now = time.time()
        self._write("INSERT INTO events VALUES (?,?,?,?,?)", (run_id, name, step, "started", now))
        if step == "connect":  # an attempt: counted, and its time kept for the convergence report
            self._write("UPDATE hosts SET status = 'running', updated = ?, attempts = COALESCE(attempts, 0) + 1, "
                        "first_attempt = COALESCE(first_attempt, ?), last_attempt = ? WHERE run_id = ? AND name = ?",
                        (now, now, now, run_id, name))
        elif step == "probe":  # the Mac answered
            self._write("UPDATE hosts SET last_seen = ? WHERE run_id = ? AND name = ?", (now, run_id, name))

    def host_done(self, run_id: str, name: str, status: str, reason: str | None, result: dict) -> None:
        now = time.time()
        converged = now if status in DONE else None
        self._write("UPDATE hosts SET status = ?, reason = ?, result = ?, updated = ?, next_retry = NULL, "
                    "converged_at = COALESCE(converged_at, ?) WHERE run_id = ? AND name = ?",
                    (status, reason, json.dumps(result), now, converged, run_id, name))
        self._write("INSERT INTO events VALUES (?,?,?,?,?)", (run_id, name, "host", status, now))

    def host_pending(self, run_id: str, name: str, reason: str | None, result: dict, next_retry: float) -> None:
        """A campaign's Mac that was not reached (or hit a transient failure): tried again from NEXT_RETRY."""
        self._write("UPDATE hosts SET status = 'pending', reason = ?, result = ?, updated = ?, next_retry = ? "
                    "WHERE run_id = ? AND name = ?", (reason, json.dumps(result), time.time(), next_retry, run_id, name))
        self._write("INSERT INTO events VALUES (?,?,?,?,?)", (run_id, name, "host", "pending", time.time()))

    def attempt_count(self, run_id: str, name: str) -> int:
        row = self.db.execute("SELECT COALESCE(attempts, 0) FROM hosts WHERE run_id = ? AND name = ?",
                              (run_id, name)).fetchone()
        return row[0] if row else 0

    def due(self, run_id: str, now: float) -> tuple[list[str], float | None]:
        """A campaign's pending Macs whose retry time has come, and when the next of the others is due."""
        rows = self.db.execute("SELECT name, next_retry FROM hosts WHERE run_id = ? AND status IN ('pending', "
                               "'running') ORDER BY rowid", (run_id,)).fetchall()
        later = [t for _, t in rows if t is not None and t > now]
        return [n for n, t in rows if t is None or t <= now], min(later) if later else None

    def attempts(self, run_id: str) -> dict[str, Attempts]:
        rows = self.db.execute("SELECT name, COALESCE(attempts, 0), first_attempt, last_attempt, last_seen, "
                               "converged_at, next_retry FROM hosts WHERE run_id = ?", (run_id,)).fetchall()
        return {row[0]: Attempts(*row[1:]) for row in rows}

    def convergence(self, run_id: str) -> tuple[int, int, int]:
        """Converged, pending and failed (or unreachable) Macs of the run now."""
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM hosts WHERE run_id = ? GROUP BY status",
                                      (run_id,)).fetchall())
        converged = sum(counts.get(s, 0) for s in DONE)
        failed = counts.get("failed", 0) + counts.get("unreachable", 0)
        return converged, sum(counts.values()) - converged - failed, failed

    def record_progress(self, run_id: str) -> None:
        """One point of the run's convergence over time."""
        self._write("INSERT INTO progress VALUES (?,?,?,?,?)", (run_id, time.time(), *self.convergence(run_id)))

    def progress(self, run_id: str) -> list[tuple[float, int, int, int]]:
        return self.db.execute("SELECT at, converged, pending, failed FROM progress WHERE run_id = ? ORDER BY at",
                               (run_id,)).fetchall()

    def identity(self, inventory: str, name: str) -> tuple | None:
        return self.db.execute("SELECT serial, hardware_uuid, ether, host_key, address, first_seen, last_seen "
                               "FROM identities WHERE inventory = ? AND name = ?", (inventory, name)).fetchone()

    def identities(self, inventory: str) -> list[tuple]:
        return self.db.execute("SELECT name, serial, hardware_uuid, ether, host_key, address, first_seen, last_seen "
                               "FROM identities WHERE inventory = ? ORDER BY name", (inventory,)).fetchall()

    def save_identity(self, inventory: str, name: str, serial: str | None, hardware_uuid: str | None,
                      ether: str | None, host_key: str | None, address: str) -> None:
        """First contact records the Mac; later contacts keep what was known and update where and when."""
        now = time.time()
        self._write("INSERT INTO identities VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (inventory, name) DO UPDATE SET "
                    "serial = COALESCE(serial, excluded.serial), hardware_uuid = COALESCE(hardware_uuid, "
                    "excluded.hardware_uuid), ether = COALESCE(excluded.ether, ether), host_key = excluded.host_key, "
                    "address = excluded.address, last_seen = excluded.last_seen",
                    (inventory, name, serial, hardware_uuid, ether, host_key, address, now, now))

    def forget_identity(self, inventory: str, name: str) -> bool:
        with self.lock:
            return self.db.execute("DELETE FROM identities WHERE inventory = ? AND name = ?",
                                   (inventory, name)).rowcount > 0

    # platform_uninstall: each Mac's agent goes on the platform too (platform.py). States: 'mac' (its
    # agent UUID is known, the Mac-side uninstall not yet done), 'due', 'done'. Written before each
    # step, so a resume never repeats a platform uninstall and never skips one.
    def platform_known(self, run_id: str, name: str, agent_uuid: str) -> None:
        self._write("INSERT INTO platform VALUES (?,?,?,'mac',NULL,?) ON CONFLICT (run_id, name) DO UPDATE SET "
                    "agent_uuid = excluded.agent_uuid, updated = excluded.updated WHERE state = 'mac'",
                    (run_id, name, agent_uuid, time.time()))

    def platform_mac_done(self, run_id: str, name: str) -> None:
        self._write("UPDATE platform SET state = 'due', updated = ? WHERE run_id = ? AND name = ? AND state = 'mac'",
                    (time.time(), run_id, name))

    def platform_set(self, run_id: str, name: str, state: str, detail: str | None) -> None:
        self._write("UPDATE platform SET state = ?, detail = ?, updated = ? WHERE run_id = ? AND name = ?",
                    (state, detail, time.time(), run_id, name))

    def platform_records(self, run_id: str) -> dict[str, tuple[str, str, str | None]]:
        """Mac -> (agent UUID, state, detail)."""
        rows = self.db.execute("SELECT name, agent_uuid, state, detail FROM platform WHERE run_id = ?", (run_id,))
        return {name: (uuid, state, detail) for name, uuid, state, detail in rows.fetchall()}

    def finish(self, run_id: str, state: str, note: str | None = None) -> None:
        self._write("UPDATE runs SET state = ?, finished = ?, note = ? WHERE id = ?",
                    (state, time.time(), note, run_id))

    def reset_unfinished(self, run_id: str) -> None:
        """Hosts caught mid-way by a crash or Ctrl-C go back to pending; their Macs are re-checked."""
        self._write("UPDATE hosts SET status = 'pending' WHERE run_id = ? AND status = 'running'", (run_id,))

    def relay_opened(self, run_id: str, name: str) -> None:
        """Written before a relay's one-time key is: a killed run's keys are found again by resume."""
        self._write("INSERT OR IGNORE INTO relays VALUES (?,?)", (run_id, name))

    def relay_closed(self, run_id: str, name: str) -> None:
        self._write("DELETE FROM relays WHERE run_id = ? AND name = ?", (run_id, name))

    def open_relays(self, run_id: str) -> list[str]:
        return [n for (n,) in self.db.execute("SELECT name FROM relays WHERE run_id = ? ORDER BY name", (run_id,))]

    def run(self, run_id: str) -> Run:
        row = self.db.execute("SELECT id, action, playbook, inventory, lim, extra, forks, state, started, finished, "
                              "pid, note, until_ts, retry_every FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path}; `fleetctl runs` lists them")
        r = Run(*row)
        r.extra = json.loads(row[5])
        if r.state == "running" and not _alive(r.pid):
            r.state = "interrupted"
        return r

    def runs(self, count: int = 20) -> list[tuple[Run, dict[str, int]]]:
        out = []
        for (run_id,) in self.db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT ?", (count,)).fetchall():
            counts = dict(self.db.execute("SELECT status, COUNT(*) FROM hosts WHERE run_id = ? GROUP BY status",
                                          (run_id,)).fetchall())
            out.append((self.run(run_id), counts))
        return out

    def hosts(self, run_id: str) -> list[tuple[str, int, str, str | None, dict | None]]:
        rows = self.db.execute("SELECT name, wave, status, reason, result FROM hosts WHERE run_id = ? "
                               "ORDER BY rowid", (run_id,)).fetchall()
        return [(n, w, s, r, json.loads(res) if res else None) for n, w, s, r, res in rows]

    def close(self) -> None:
        self.db.close()
