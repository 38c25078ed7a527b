from pathlib import Path

import pytest
import yaml

from fleetctl import agentlog

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "agentlog.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_agent_log_lines(case):
    events = agentlog.parse(case["input"])
    assert len(events) == len(case["events"])
    for event, expected in zip(events, case["events"]):
        for key, value in expected.items():
            assert getattr(event, key) == value, (key, event)


def test_since_and_severity():
    events = agentlog.parse(
        "2026-01-01 10:00:00.000 [qualys-cloud-agent][1]:[Error]:[2]:old\n"
        "2026-01-01 11:00:00.000 [qualys-cloud-agent][1]:[Warning]:[2]:new\n"
        "2026-01-01 11:00:01.000 [qualys-cloud-agent][1]:[Fatal]:[2]:newer\n")
    recent = agentlog.since(events, "2026-01-01 10:30:00")
    assert [e.message for e in recent] == ["new", "newer"]
    assert [e.message for e in agentlog.at_least(recent, "Error")] == ["newer"]
    assert [e.message for e in agentlog.at_least(events, "Warning")] == ["old", "new", "newer"]
