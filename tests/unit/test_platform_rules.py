"""The platform side's decisions: which Macs' agents go on the platform and when (journal states,
resume), the flags `fleetctl platform` raises, and the playbook keys, with a fake API client."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fakemac as m
from fleetctl import platform, platform_sweep, playbook
from fleetctl.actions import uninstall
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.journal import Journal
from fleetctl.qualys_api import Agent, ApiError

UUID_A = "1b3c5d7e-0000-4000-8000-00000000a1b2"
UUID_B = "7f6e5d4c-0000-4000-8000-00000000c3d4"
NOW = datetime.now(timezone.utc)


class FakeClient:
    """The platform's records; ERROR (an ApiError) makes every call fail."""

    def __init__(self, agents: list[Agent], error: ApiError | None = None):
        self.records, self.error, self.uninstalled = list(agents), error, []

    def agents(self, field: str, values) -> list[Agent]:
        if self.error:
            raise self.error
        key = {"agentUuid": "agent_uuid", "name": "name"}[field]
        values = set(values)
        return [replace(a) for a in self.records if getattr(a, key) in values]  # a new object per answer, as HTTP

    def uninstall(self, asset_id: str) -> None:
        self.uninstalled.append(asset_id)
        self.records = [a for a in self.records if a.asset_id != asset_id]


def test_uninstall_journals_the_agent_uuid_before_the_agent_goes(tmp_path, monkeypatch):
    conns, remembered = [], []
    real = m.FakeConnection
    monkeypatch.setattr(m, "FakeConnection", lambda replies: conns.append(real(replies)) or conns[-1])
    action = uninstall.Remembering(lambda name, uuid: remembered.append((name, uuid, len(conns[0].scripts))))
    result = m.run_action(tmp_path, action, [
        ("probe", m.probe()), ("agent id", m.facts(hostid_file="/etc/qualys/hostid", agent_uuid=UUID_A.upper())),
        ("uninstall", m.facts(hostid_left=1))])
    assert result.status == "changed"
    assert remembered == [("mac", UUID_A, 2)]  # lower-cased, after probe and agent id, before the uninstall


def test_a_hostid_that_is_not_a_uuid_is_shown_never_sent(tmp_path):
    remembered = []
    hostile = "1' OR '1'='1\x1b]0;pwned"
    result = m.run_action(tmp_path, uninstall.Remembering(lambda *a: remembered.append(a)), [
        ("probe", m.probe()), ("agent id", m.facts(hostid_file="/etc/qualys/hostid", agent_uuid=hostile)),
        ("uninstall", m.facts(hostid_left=1))])
    assert remembered == [] and result.status == "changed"
    assert "holds no agent UUID" in result.reason


def test_platform_uninstall_belongs_to_uninstall_playbooks(tmp_path):
    book = tmp_path / "b.yml"
    book.write_text("action: uninstall\nplatform_uninstall: true\n")
    assert playbook.load(book).platform_uninstall
    book.write_text("action: install\nname: x\nplatform_uninstall: true\n")
    with pytest.raises(UsageError, match=r"b.yml:3: platform_uninstall belongs to an uninstall playbook"):
        playbook.load(book)
    book.write_text("action: uninstall\nplatform_uninstall: 'yes'\n")
    with pytest.raises(UsageError, match=r"b.yml:2: platform_uninstall must be true or false"):
        playbook.load(book)


def test_journal_states_never_go_back(tmp_path):
    j = Journal(tmp_path / "j.db")
    j.platform_known("r1", "mac-1", UUID_A)
    assert j.platform_records("r1") == {"mac-1": (UUID_A, "mac", None)}
    j.platform_mac_done("r1", "mac-1")
    j.platform_mac_done("r1", "mac-2")  # never seen: nothing to do on the platform
    assert j.platform_records("r1") == {"mac-1": (UUID_A, "due", None)}
    j.platform_set("r1", "mac-1", "done", "uninstalled")
    j.platform_known("r1", "mac-1", UUID_B)  # a retried Mac reads its hostid again: a done record stays done
    j.platform_mac_done("r1", "mac-1")
    assert j.platform_records("r1") == {"mac-1": (UUID_A, "done", "uninstalled")}


def hosts(*names: str) -> list[Host]:
    return [Host(n, {"server_uri": "https://qagpublic.qg2.apps.qualys.com/CloudAgent"}) for n in names]


def due(j: Journal, *pairs: tuple[str, str]) -> None:
    for name, uuid in pairs:
        j.platform_known("r1", name, uuid)
        j.platform_mac_done("r1", name)


def test_sweep_uninstalls_each_due_agent_once_and_keeps_failures_due(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j.db")
    due(j, ("mac-1", UUID_A), ("mac-2", UUID_B))
    j.platform_known("r1", "mac-3", "00000000-0000-4000-8000-000000000003")  # its Mac-side uninstall failed
    api = FakeClient([Agent("11", "mac-1", UUID_A), Agent("12", "mac-1", UUID_A)])
    monkeypatch.setattr(platform, "clients", lambda hs, s, say: {h.name: api for h in hs})
    assert platform_sweep.sweep(j, "r1", hosts("mac-1", "mac-2", "mac-3"), None, print) == 0
    records = j.platform_records("r1")
    assert records["mac-1"][1:] == ("done", "uninstalled on the platform: asset 11, 12 (licence freed)")
    assert records["mac-2"][1] == "done" and "lists no agent" in records["mac-2"][2]
    assert records["mac-3"][1] == "mac" and api.uninstalled == ["11", "12"]
    assert platform_sweep.sweep(j, "r1", hosts("mac-1", "mac-2", "mac-3"), None, print) == 0
    assert api.uninstalled == ["11", "12"]  # a resume never repeats one


def test_sweep_leaves_agents_due_when_the_platform_does_not_answer(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j.db")
    due(j, ("mac-1", UUID_A))
    api = FakeClient([Agent("11", "mac-1", UUID_A)], ApiError("HTTP 409, the platform asks to wait 600s more"))
    monkeypatch.setattr(platform, "clients", lambda hs, s, say: {h.name: api for h in hs})
    assert platform_sweep.sweep(j, "r1", hosts("mac-1"), None, print) == 1
    assert j.platform_records("r1")["mac-1"][1:] == ("due", "not yet: HTTP 409, the platform asks to wait 600s more")
    api.error = None
    assert platform_sweep.sweep(j, "r1", hosts("mac-1"), None, print) == 0
    assert api.uninstalled == ["11"]


def view(name: str, uuid: str) -> platform.MacView:
    return platform.MacView(name, "agent 6.1.0.28", uuid)


def test_flags_unknown_duplicate_stale_and_missing_module():
    fresh, old = NOW - timedelta(minutes=5), NOW - timedelta(days=9)
    api = FakeClient([
        Agent("21", "mac-ok", UUID_A, "6.1.0.28", fresh, ["AGENT_VM", "AGENT_PC"]),
        Agent("22", "mac-dup", UUID_B, "6.1.0.28", fresh, ["AGENT_VM"]),
        Agent("23", "mac-dup", "99999999-0000-4000-8000-000000000000", "6.1.0.28", old, ["AGENT_VM"]),
        Agent("24", "mac-old", "44444444-0000-4000-8000-000000000000", "6.0.0.1", old, ["AGENT_VM", "AGENT_PC"]),
    ])
    views = [view("mac-ok", UUID_A), view("mac-dup", UUID_B), view("mac-old", "44444444-0000-4000-8000-000000000000"),
             view("mac-elsewhere", "55555555-0000-4000-8000-000000000000")]
    platform._compare(api, views, timedelta(days=2), ["AGENT_VM", "AGENT_PC"])
    kinds = {v.name: [f.kind for f in v.flags] for v in views}
    assert kinds == {"mac-ok": [], "mac-dup": ["duplicate record", "module not activated"],
                     "mac-old": ["check-in too old"], "mac-elsewhere": ["unknown to the platform"]}
    dup = views[1]
    assert dup.asset_ids == ["22", "23"] and "asset 23 (agent 99999999…" in dup.flags[0].detail
    assert "asset 22 (" not in dup.flags[0].detail  # the current record is not its own duplicate
    assert views[0].known and views[0].version == "6.1.0.28" and views[3].known is False
    assert platform.exit_code(views) == 3 and platform.exit_code(views[:1]) == 0


def test_api_failure_flags_every_mac_it_concerns():
    views = [view("mac-1", UUID_A)]
    platform._compare(FakeClient([], ApiError("INVALID_CREDENTIALS: Authentication failed")), views,
                      timedelta(days=2), [])
    assert [(f.kind, f.detail) for f in views[0].flags] == [
        ("platform not asked", "INVALID_CREDENTIALS: Authentication failed")]
    assert views[0].known is None


def test_modules_a_scan_playbook_needs(tmp_path):
    book = tmp_path / "scan.yml"
    book.write_text("action: scan\nscan:\n  type: vmpc\n")
    assert platform.needed_modules(book, ("AGENT_SCA",)) == ["AGENT_PC", "AGENT_SCA", "AGENT_VM"]
    book.write_text("action: scan\nscan:\n  type: inv\n")
    with pytest.raises(UsageError, match="module a 'inv' scan needs is not documented; name it with --needs-module"):
        platform.needed_modules(book, ())
