"""The lab pod's host asset records: what the platform knows about the agents that reached it.

Built from the pod's own files, never from what the lab knows about its Macs:
  DIR/checkins.jsonl    one line per check-in (pod.py writes it)
  DIR/uninstalled.jsonl one line per asset uninstalled through the API: {"id", "customer_id",
                        "hostid", "after_checkins": how many check-ins the pod had then, "time"}
Replaying both in order gives the same records, with the same asset ids, after a pod restart.

A record is one agent (its hostid, the "agent UUID") in one subscription (customer id): its
first check-in creates it, later ones update it. An uninstalled record is gone; the same agent
checking in again afterwards re-provisions and gets a new record with a new asset id
("Enhancing Qualys Cloud Agent Purge Rules", notifications.qualys.com, 2023-10-23).
Asset ids (and QWEB host ids) are handed out in creation order, as a platform numbers them.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FIRST_ASSET_ID = 84047001  # the size of real asset ids (docs/qualys-platform-api.md, fixtures)
FIRST_QWEB_ID = 107800001


def forget(pod_dir: Path) -> None:
    """A new lab is a new subscription: an earlier lab's agents, under the same Mac names, would
    otherwise show as duplicate records of this lab's."""
    for name in ("checkins.jsonl", "uninstalled.jsonl"):
        (pod_dir / name).unlink(missing_ok=True)


@dataclass
class Record:
    id: int
    qweb_id: int
    hostid: str
    customer_id: str
    activation_id: str
    name: str
    created: str  # UTC, YYYY-MM-DDTHH:MM:SSZ: the first check-in
    last_checkin: str
    agent_version: str
    peer: str  # the address the platform saw the check-in come from (a proxy's, behind one)
    address: str  # what the agent reported as its own address
    os: str


class Records:
    """The records of DIR, refreshed from its files on each look (only the new lines are read)."""

    def __init__(self, pod_dir: Path):
        self.checkins_file = pod_dir / "checkins.jsonl"
        self.uninstalled_file = pod_dir / "uninstalled.jsonl"
        self.lock = threading.Lock()
        self._offset = 0  # bytes of checkins.jsonl read so far
        self._seen = 0  # check-ins read so far
        self._created = 0
        self._live: dict[tuple[str, str], Record] = {}  # (customer id, hostid) -> its current record
        self._pending = self._read_uninstalled()  # uninstalls not yet replayed, in order

    def _read_uninstalled(self) -> list[dict]:
        try:
            lines = self.uninstalled_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def _drop(self, asset_id: int) -> Record | None:
        key = next((k for k, r in self._live.items() if r.id == asset_id), None)
        return self._live.pop(key) if key else None

    def _apply(self, checkin: dict) -> None:
        hostid, customer = str(checkin.get("hostid") or ""), str(checkin.get("customer_id") or "")
        if not hostid:
            return
        when = str(checkin.get("time") or "")
        record = self._live.get((customer, hostid))
        if record is None:
            record = Record(FIRST_ASSET_ID + self._created, FIRST_QWEB_ID + self._created, hostid, customer, "",
                            "", when, when, "", "", "", "")
            self._created += 1
            self._live[(customer, hostid)] = record
        record.last_checkin = when
        record.name = str(checkin.get("hostname") or record.name)
        record.agent_version = str(checkin.get("agent_version") or record.agent_version)
        record.activation_id = str(checkin.get("activation_id") or record.activation_id)
        record.peer = str(checkin.get("peer") or record.peer)
        record.address = str(checkin.get("address") or record.peer)
        record.os = str(checkin.get("os") or record.os)

    def refresh(self) -> None:
        """Read the check-ins written since the last look; a line still being written waits."""
        try:
            with open(self.checkins_file, "rb") as f:
                f.seek(self._offset)
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    self._offset += len(line)
                    self._replay_uninstalls()
                    self._seen += 1
                    try:
                        checkin = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(checkin, dict):
                        self._apply(checkin)
        except FileNotFoundError:
            pass
        self._replay_uninstalls()

    def _replay_uninstalls(self) -> None:
        """The uninstalls made when the pod had read as many check-ins as now."""
        while self._pending and self._pending[0]["after_checkins"] <= self._seen:
            self._drop(int(self._pending.pop(0)["id"]))

    def visible(self, customer_id: str) -> list[Record]:
        """The records of CUSTOMER_ID's subscription, by asset id."""
        with self.lock:
            self.refresh()
            return sorted((r for r in self._live.values() if r.customer_id == customer_id), key=lambda r: r.id)

    def uninstall(self, asset_id: int, customer_id: str) -> Record | None:
        """Remove asset ASSET_ID of CUSTOMER_ID's subscription for good; None: no such record there."""
        with self.lock:
            self.refresh()
            record = next((r for r in self._live.values() if r.id == asset_id and r.customer_id == customer_id), None)
            if record is None:
                return None
            entry = {"id": asset_id, "customer_id": customer_id, "hostid": record.hostid,
                     "after_checkins": self._seen, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with open(self.uninstalled_file, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
            self._drop(asset_id)
            return record
