"""The Qualys platform API client: recorded answers (tests/unit/cases/platform, their sources named
in each file) through the parser, paging, throttling, the API URL, and the request XML."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fleetctl import qualys_api
from fleetctl.errors import UsageError
from fleetctl.qualys_api import ApiError, Client

CASES = Path(__file__).parent / "cases" / "platform"
USER, PASSWORD = "acme_ab12", "s3cret-Pa55word"


def answer(name: str) -> bytes:
    return (CASES / name).read_bytes()


class Reply:
    def __init__(self, body: bytes, status: int = 200, headers: dict | None = None):
        self.status_code, self.headers, self._body = status, headers or {}, body
        self.raw = self

    def read(self, n: int, decode_content: bool = True) -> bytes:
        return self._body[:n]

    def close(self) -> None:
        pass


class FakeHttp:
    """Stands in for requests.Session.post: replays REPLIES, keeps every request body."""

    def __init__(self, *replies: Reply):
        self.replies, self.sent = list(replies), []

    def post(self, url: str, data: bytes, timeout: float, stream: bool, verify) -> Reply:
        self.sent.append((url, ET.fromstring(data)))
        return self.replies.pop(0)


def client(*replies: Reply, max_wait_s: int = 300) -> tuple[Client, FakeHttp, list[float], list[str]]:
    slept, said = [], []
    c = Client("https://qualysapi.qg2.apps.qualys.com", USER, PASSWORD, max_wait_s=max_wait_s, say=said.append,
               sleep=slept.append)
    http = FakeHttp(*replies)
    c.http.post = http.post
    return c, http, slept, said


def criteria(request: ET.Element) -> list[tuple[str, str, str]]:
    return [(c.get("field"), c.get("operator"), c.text) for c in request.iterfind("filters/Criteria")]


def test_documented_search_answer_parses_into_agents():
    agents = qualys_api.parse_agents(qualys_api.check_answer(200, answer("search_hostasset.xml")))
    assert [(a.asset_id, a.name, a.agent_uuid, a.version) for a in agents] == [
        ("84047683", "lab-mbp-014", "1b3c5d7e-0000-4000-8000-00000000a1b2", "6.1.0.28"),
        ("84047711", "lab-mba-022", "7f6e5d4c-0000-4000-8000-00000000c3d4", "5.8.0.12")]
    assert agents[0].last_checkin == datetime(2024, 3, 7, 13, 36, 58, tzinfo=timezone.utc)
    assert agents[0].modules == ["AGENT_VM", "AGENT_PC"] and agents[1].modules == ["AGENT_VM"]
    assert qualys_api.parse_agents(qualys_api.check_answer(200, answer("search_empty.xml"))) == []


def test_errors_are_read_from_the_body_whatever_the_http_status():
    with pytest.raises(ApiError, match="INVALID_CREDENTIALS: Authentication failed .*qualys_api_password"):
        qualys_api.check_answer(200, answer("error_invalid_credentials.xml"))
    with pytest.raises(ApiError, match="1965: The requested operation is blocked"):
        qualys_api.check_answer(409, answer("error_rate_limit.xml"))
    with pytest.raises(ApiError, match="not a Qualys API answer") as e:
        qualys_api.check_answer(502, b"<html>Bad gateway")
    assert e.value.transient
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>'
    with pytest.raises(ApiError, match="not a Qualys API answer"):
        qualys_api.check_answer(200, bomb)  # entities are refused (defusedxml), never expanded


def test_search_pages_past_last_id_until_no_more_records():
    c, http, _, _ = client(Reply(answer("search_hostasset_more.xml")), Reply(answer("search_hostasset.xml")))
    agents = c.agents("agentUuid", ["1b3c5d7e-0000-4000-8000-00000000a1b2"])
    assert len(agents) == 3 and len(http.sent) == 2
    url, first = http.sent[0]
    assert url.endswith("/qps/rest/2.0/search/am/hostasset")
    assert criteria(first) == [("tagName", "EQUALS", "Cloud Agent"),
                               ("agentUuid", "IN", "1b3c5d7e-0000-4000-8000-00000000a1b2")]
    assert first.findtext("preferences/limitResults") == "100"
    assert criteria(http.sent[1][1])[-1] == ("id", "GREATER", "84047683")


def test_uuids_are_asked_in_batches():
    uuids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(120)]
    c, http, _, _ = client(*[Reply(answer("search_empty.xml"))] * 3)
    assert c.agents("agentUuid", uuids) == []
    assert [len(criteria(r)[1][2].split(",")) for _, r in http.sent] == [50, 50, 20]


def test_throttled_calls_wait_what_the_platform_says_then_give_up():
    limited = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-ToWait-Sec": "42",
               "X-RateLimit-Window-Sec": "3600"}
    c, _, slept, said = client(Reply(answer("error_rate_limit.xml"), 409, limited), Reply(answer("search_empty.xml")))
    assert c.agents("agentUuid", ["x"]) == []
    assert slept == [42.0]
    assert any("X-RateLimit-ToWait-Sec 42" in line for line in said)
    c, _, slept, _ = client(*[Reply(answer("error_rate_limit.xml"), 409, limited)] * 5, max_wait_s=100)
    with pytest.raises(ApiError, match="asks to wait 42s more") as e:
        c.agents("agentUuid", ["x"])
    assert e.value.transient and slept == [42.0, 42.0]


def test_verbose_lines_never_carry_credentials():
    c, _, _, said = client(Reply(answer("error_invalid_credentials.xml")))
    with pytest.raises(ApiError):
        c.agents("agentUuid", ["x"])
    assert said and not any(USER in line or PASSWORD in line for line in said)
    assert c.http.auth == (USER, PASSWORD)


def test_uninstall_posts_the_asset_id_and_checks_the_answer():
    c, http, _, _ = client(Reply(answer("uninstall_asset.xml")))
    c.uninstall("1113679")
    assert http.sent[0][0].endswith("/qps/rest/2.0/uninstall/am/asset/1113679")
    c, _, _, _ = client(Reply(answer("uninstall_asset.xml")))
    with pytest.raises(ApiError, match="without that asset"):
        c.uninstall("42")
    with pytest.raises(ApiError, match="not a number"):
        c.uninstall("1; DROP")


def test_request_values_are_xml_text_never_markup():
    body = qualys_api._request([("name", "EQUALS", 'mac</Criteria><Criteria field="id">1&"')])
    assert criteria(ET.fromstring(body)) == [("name", "EQUALS", 'mac</Criteria><Criteria field="id">1&"')]


def test_api_url_from_the_platform_or_the_setting():
    assert qualys_api.api_url("https://qagpublic.qg2.apps.qualys.com/CloudAgent/", None, "inv:3") == \
        "https://qualysapi.qg2.apps.qualys.com"
    assert qualys_api.api_url("https://qagpublic.qg1.apps.qualys.eu/CloudAgent", None, "x") == \
        "https://qualysapi.qualys.eu"
    assert qualys_api.api_url("https://anything/CloudAgent", "https://qualysapi.example.net/", "x") == \
        "https://qualysapi.example.net"
    with pytest.raises(UsageError, match="inv.yml:7: .*no documented Qualys API server .* set qualys_api_url"):
        qualys_api.api_url("https://pod.private.example/CloudAgent", None, "inv.yml:7")
    for bad in ("http://qualysapi.example.net", "https://qualysapi.example.net/api/2.0", "qualysapi.example.net"):
        with pytest.raises(UsageError, match="qualys_api_url"):
            qualys_api.api_url(None, bad, "x")
