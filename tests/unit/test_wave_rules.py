from pathlib import Path

import pytest

from fleetctl import playbook
from fleetctl.errors import UsageError
from fleetctl.waves import Limit, Wave, assign, parse_limit

NAMES = [f"m{i:02d}" for i in range(1, 21)]


def test_limits():
    assert parse_limit(3, "f:1", "max_fail").of(100) == 3
    assert parse_limit("10%", "f:1", "max_fail").of(25) == 2
    for bad in ("-1", "ten", "150%", "0%"):
        with pytest.raises(UsageError, match="count .* or a percentage"):
            parse_limit(bad, "f:1", "max_fail")


def test_assign_canary_percent_group_and_rest():
    waves = [Wave("canary", Limit(count=1), None, 0, None, None), Wave("quarter", Limit(percent=25), None, 0, None, None),
             Wave("office", None, "office", 0, None, None)]
    out = assign(NAMES, {"office": {"m20", "m19", "m03"}}, waves, None)
    assert [(w.name, names) for w, names in out] == [
        ("canary", ["m01"]), ("quarter", ["m02", "m03", "m04", "m05", "m06"]), ("office", ["m19", "m20"]),
        ("rest", [f"m{i:02d}" for i in range(7, 19)])]
    assert assign(NAMES, {}, [], None)[0][0].name == "all"
    with pytest.raises(UsageError, match="no group 'nope'"):
        assign(NAMES, {}, [Wave("x", None, "nope", 0, None, None)], None)


@pytest.mark.parametrize("text, words", [
    ("waves: [{hosts: 1, group: a}]", "either hosts"),
    ("waves: [{hosts: 1, soak: forever}]", "soak must be"),
    ("waves: [{hosts: 1, not_before: tomorrow}]", "not_before must be"),
    ("waves: [{hosts: 1, colour: red}]", "a wave takes"),
    ("max_fail: lots", "max_fail must be"),
    ("failure_budget: 200%", "failure_budget must be"),
])
def test_bad_waves(tmp_path: Path, text, words):
    path = tmp_path / "p.yml"
    path.write_text("action: upgrade\n" + text + "\n")
    with pytest.raises(UsageError, match=words) as e:
        playbook.load(path)
    assert f"{path}:2" in str(e.value)


def test_waves_from_a_playbook(tmp_path: Path):
    path = tmp_path / "p.yml"
    path.write_text("action: upgrade\nmax_fail: 10%\nfailure_budget: 3\nwaves:\n  - hosts: 2\n"
                    "  - {hosts: 50%, soak: 10m, not_before: '2026-12-01 22:00', max_fail: 1}\n")
    book = playbook.load(path)
    canary, second = book.waves
    assert canary.name == "canary" and canary.max_fail == Limit(percent=10.0)
    assert second.soak_s == 600 and second.max_fail == Limit(count=1) and second.not_before.hour == 22
    assert book.failure_budget == Limit(count=3)


def test_windows_and_not_before():
    from datetime import datetime, time

    from fleetctl.waves import parse_window

    night = Wave("w", None, None, 0, None, None, parse_window("22:00-06:00", "f:1"))
    assert night.window == (time(22, 0), time(6, 0))
    assert night.closed(datetime(2026, 1, 1, 23, 30)) is None
    assert night.closed(datetime(2026, 1, 1, 5, 59)) is None
    assert "between 22:00 and 06:00" in night.closed(datetime(2026, 1, 1, 12, 0))
    day = Wave("w", None, None, 0, datetime(2026, 1, 2), None, parse_window("9:00-17:30", "f:1"))
    assert "before 2026-01-02" in day.closed(datetime(2026, 1, 1, 10, 0))
    assert day.closed(datetime(2026, 1, 2, 10, 0)) is None
    with pytest.raises(UsageError, match="window must be"):
        parse_window("25:00-06:00", "f:1")
