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
"""
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
        self.lock = threading.Lock()

    def _write(self, sql: str, args: tuple) -> None:
        with self.lock:
            self.db.execute(sql, args)

    def start(self, run_id: str, action: str, playbook: Path, inventory: Path, limit: str | None,
              extra: tuple[str, ...], forks: int, hosts: list[tuple[str, int]], resume: bool = False) -> None:
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
                    self.db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
                        run_id, action, str(playbook.resolve()), str(inventory.resolve()), limit, json.dumps(extra),
                        forks, "running", time.time(), None, os.getpid(), None))
                    self.db.executemany("INSERT INTO hosts VALUES (?,?,?,?,?,?,?)",
                                        [(run_id, n, w, "pending", None, None, time.time()) for n, w in hosts])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def step(self, run_id: str, name: str, step: str) -> None:
        self._write("INSERT INTO events VALUES (?,?,?,?,?)", (run_id, name, step, "started", time.time()))
        if step == "connect":
            self._write("UPDATE hosts SET status = 'running', updated = ? WHERE run_id = ? AND name = ?",
                        (time.time(), run_id, name))

    def host_done(self, run_id: str, name: str, status: str, reason: str | None, result: dict) -> None:
        self._write("UPDATE hosts SET status = ?, reason = ?, result = ?, updated = ? WHERE run_id = ? AND name = ?",
                    (status, reason, json.dumps(result), time.time(), run_id, name))
        self._write("INSERT INTO events VALUES (?,?,?,?,?)", (run_id, name, "host", status, time.time()))

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
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
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
