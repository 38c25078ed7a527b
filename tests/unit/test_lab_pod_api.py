"""The lab pod's Qualys API (lab/podapi.py, podrecords.py, podlimits.py), from made-up pod
files: no sockets, the API's handle() called as pod.py calls it."""
import base64
import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fleetctl.lab import personas, pod, podapi, podlimits
from fleetctl.lab.podrecords import FIRST_ASSET_ID, Records

from test_simulated_agent import agentdaemon

OURS = podlimits.LAB_CUSTOMER_ID
OTHER = agentdaemon.OTHER_SUBSCRIPTION["customer_id"]
ACT = "4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"
A, B1, B2, C, D = (f"{n * 8}-0000-4000-8000-00000000a1b2" for n in "abcde")
SEARCH = "/qps/rest/2.0/search/am/hostasset"


def checkin(hostid, name, when, version="6.1.0.20", customer=OURS, peer="198.18.0.10", **extra) -> dict:
    return {"hostid": hostid, "hostname": name, "time": when, "agent_version": version, "customer_id": customer,
            "activation_id": ACT, "peer": peer, "sent_hostid": hostid, **extra}


CHECKINS = [
    checkin(A, "mac-001", "2026-12-06T07:00:00Z", "6.1.0.20", os="macOS 15.1", address="198.18.0.10"),
    checkin(C, "mac-002", "2026-12-06T07:00:01Z", customer=OTHER, peer="198.18.0.11"),  # other-subscription
    checkin(B1, "mac-003", "2026-12-06T07:00:02Z", peer="198.18.0.12"),  # duplicate-record: the lost one
    checkin(B2, "mac-003", "2026-12-06T07:00:02Z", peer="198.18.0.12"),
    checkin(A, "mac-001", "2026-12-06T07:01:00Z", "6.1.0.28", os="macOS 15.1", address="198.18.0.10"),
    checkin(D, "mac-004", "2026-12-06T07:01:01Z", peer="198.19.0.1"),  # behind the proxy: no address sent
    checkin(B2, "mac-003", "2026-12-06T07:01:02Z", peer="198.18.0.12"),
]


def write_checkins(pod_dir: Path, lines: list[dict]) -> None:
    with open(pod_dir / "checkins.jsonl", "a") as f:
        f.writelines(json.dumps(c) + "\n" for c in lines)


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    podlimits.write_config(tmp_path)
    write_checkins(tmp_path / "pod", CHECKINS)
    return tmp_path


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(lab_dir: Path, clock: Clock) -> podapi.Api:
    return podapi.Api(lab_dir / "pod", limits=podlimits.Limits(clock))


def creds(lab_dir: Path) -> tuple[str, str]:
    return podlimits.API_USER, (lab_dir / "api-password").read_text().strip()


def call(api: podapi.Api, path: str = SEARCH, body: str | bytes = "", auth=None, no_auth: bool = False):
    user, password = auth or creds(api.pod_dir.parent)
    headers = {} if no_auth else {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    answer = api.handle(path, headers, body.encode() if isinstance(body, str) else body, "198.19.0.1")
    return answer, ET.fromstring(answer.body)


def request(*criteria: tuple[str, str, str], limit: int | None = None, tag: bool = True) -> bytes:
    """A ServiceRequest built as a client builds one (ElementTree, never text pasted together)."""
    root = ET.Element("ServiceRequest")
    if limit is not None:
        ET.SubElement(ET.SubElement(root, "preferences"), "limitResults").text = str(limit)
    filters = ET.SubElement(root, "filters")
    for field, operator, value in ((("tagName", "EQUALS", "Cloud Agent"),) if tag else ()) + criteria:
        ET.SubElement(filters, "Criteria", field=field, operator=operator).text = value
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def assets(root: ET.Element) -> list[ET.Element]:
    return root.findall("data/HostAsset")


def agent_ids(root: ET.Element) -> list[str]:
    return [a.findtext("agentInfo/agentId") for a in assets(root)]


def error(root: ET.Element) -> tuple[str, str, str]:
    return (root.findtext("responseCode"), root.findtext("responseErrorDetails/errorMessage"),
            root.findtext("responseErrorDetails/errorResolution"))


def test_search_lists_the_subscriptions_agents_by_id_with_the_documented_fields(api):
    answer, root = call(api, body=request())
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/xml")
    assert root.tag == "ServiceResponse" and root.findtext("responseCode") == "SUCCESS"
    assert root.findtext("count") == "4" and root.findtext("hasMoreRecords") == "false" and root.find("lastId") is None
    assert agent_ids(root) == [A, B1, B2, D]  # never mac-002's: another subscription
    ids = [int(a.findtext("id")) for a in assets(root)]
    assert ids == sorted(ids) and ids[0] == FIRST_ASSET_ID
    first = assets(root)[0]
    assert [c.tag for c in first] == ["id", "name", "created", "modified", "type", "tags", "qwebHostId", "dnsHostName",
                                      "agentInfo", "os", "address", "trackingMethod"]
    assert {c.tag: c.text for c in first if not len(c)} == {
        "id": str(FIRST_ASSET_ID), "name": "mac-001", "created": "2026-12-06T07:00:00Z",
        "modified": "2026-12-06T07:01:00Z", "type": "HOST", "qwebHostId": "107800001", "dnsHostName": "mac-001",
        "os": "macOS 15.1", "address": "198.18.0.10", "trackingMethod": "QAGENT"}
    assert first.findtext("tags/list/TagSimple/name") == "Cloud Agent"
    info = {c.tag: c.text for c in first.find("agentInfo") if not len(c)}
    assert info == {"agentVersion": "6.1.0.28", "agentId": A, "status": "STATUS_ACTIVE",
                    "lastCheckedIn": "2026-12-06T07:01:00Z", "connectedFrom": "198.18.0.10", "platform": "Mac",
                    "activatedModule": "AGENT_VM,AGENT_PC"}
    assert first.findtext("agentInfo/activationKey/activationId") == ACT
    assert assets(root)[3].findtext("address") == "198.19.0.1"  # what the platform saw, when the agent sent none


def test_search_by_each_criterion(api):
    def found(*criteria):
        answer, root = call(api, body=request(*criteria))
        assert root.findtext("responseCode") == "SUCCESS", answer.body
        return agent_ids(root)

    assert found(("agentUuid", "EQUALS", A)) == [A]
    assert found(("agentUuid", "EQUALS", C)) == []  # the other subscription's agent is not there
    assert found(("agentUuid", "IN", f"{D}, {A},{C}")) == [A, D]
    assert found(("name", "EQUALS", "mac-003")) == [B1, B2]  # the duplicate: two records, one name
    assert found(("name", "IN", "mac-004,mac-001")) == [A, D]
    assert found(("name", "EQUALS", "mac-002")) == []
    first = FIRST_ASSET_ID
    assert found(("id", "EQUALS", str(first + 2))) == [B1]
    assert found(("id", "IN", f"{first},{first + 4}")) == [A, D]
    assert found(("id", "GREATER", str(first + 2))) == [B2, D]  # greater, not greater or equal
    assert found(("id", "GREATER", str(first)), ("name", "EQUALS", "mac-003")) == [B1, B2]  # ANDed
    _, root = call(api, body=request(("agentUuid", "EQUALS", C)))
    assert [c.tag for c in root] == ["responseCode", "count"] and root.findtext("count") == "0"  # search_empty.xml


def test_duplicate_record_the_older_never_checks_in_again(api):
    _, root = call(api, body=request(("name", "EQUALS", "mac-003")))
    old, new = assets(root)
    assert int(old.findtext("id")) < int(new.findtext("id"))
    assert old.findtext("agentInfo/lastCheckedIn") == "2026-12-06T07:00:02Z"
    assert new.findtext("agentInfo/lastCheckedIn") == "2026-12-06T07:01:02Z"


def test_pagination_with_id_greater_last_id(api):
    seen, criteria = [], ()
    for _ in range(10):
        _, root = call(api, body=request(*criteria, limit=3 if not seen else 1))
        page = assets(root)
        seen += [a.findtext("agentInfo/agentId") for a in page]
        assert root.findtext("count") == str(len(page))
        if root.findtext("hasMoreRecords") == "false":
            assert root.find("lastId") is None
            break
        assert root.findtext("hasMoreRecords") == "true" and root.findtext("lastId") == page[-1].findtext("id")
        criteria = (("id", "GREATER", root.findtext("lastId")),)
    assert seen == [A, B1, B2, D]
    _, root = call(api, body=request())
    assert len(assets(root)) == 4  # limitResults defaults to 100


@pytest.mark.parametrize("body, message", [
    (request(tag=False), "tagName EQUALS 'Cloud Agent' is required"),
    (request(tag=False, *[("agentUuid", "EQUALS", A)]), "tagName EQUALS 'Cloud Agent' is required"),
    (request(("agentId", "EQUALS", A)), "Unsupported field 'agentId'"),
    (request(("name", "CONTAINS", "mac")), "Unsupported operator 'CONTAINS' for field 'name'"),
    (request(("agentUuid", "GREATER", A)), "Unsupported operator 'GREATER'"),
    (request(("id", "EQUALS", "abc123")), "Invalid value format for criteria 'id' (abc123)"),
    (request(("id", "IN", "1,x")), "Invalid value format for criteria 'id' (x)"),
    (request(("name", "EQUALS", "")), "No value for criteria 'name'"),
    (request(limit=0), "limitResults"),
    (request(limit=1001), "limitResults"),
    (b"<ServiceRequest><filters>", "Invalid XML"),
    (b"<Request/>", "Unexpected root element"),
    (b"", "Invalid XML"),
])
def test_bad_requests_answer_invalid_request_with_details(api, body, message):
    answer, root = call(api, body=body)
    code, text, resolution = error(root)
    assert answer.status == 200 and code == "INVALID_REQUEST" and message in text and resolution


def test_uninstall_removes_the_record_for_good_and_a_new_check_in_makes_a_new_one(api, lab_dir):
    first = FIRST_ASSET_ID
    path = f"/qps/rest/2.0/uninstall/am/asset/{first}"
    answer, root = call(api, path, "<?xml version='1.0' encoding='UTF-8'?><ServiceRequest></ServiceRequest>")
    assert answer.status == 200 and root.findtext("responseCode") == "SUCCESS" and root.findtext("count") == "1"
    assert root.findtext("data/Asset/id") == str(first)
    assert root.get("{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation").endswith("/am/asset.xsd")
    assert agent_ids(call(api, body=request())[1]) == [B1, B2, D]
    for again in (path, f"/qps/rest/2.0/uninstall/am/asset/{first + 1}", "/qps/rest/2.0/uninstall/am/asset/99"):
        code, text, resolution = error(call(api, again)[1])  # gone already; another subscription's; never was
        assert code == "NOT_FOUND" and "not found" in text and resolution
    assert error(call(api, "/qps/rest/2.0/uninstall/am/asset/abc")[1])[0] == "INVALID_REQUEST"
    # the pod restarts: the uninstall holds, every other id is the same
    restarted = podapi.Api(lab_dir / "pod")
    before = [a.findtext("id") for a in assets(call(api, body=request())[1])]
    assert [a.findtext("id") for a in assets(call(restarted, body=request())[1])] == before
    # the purged agent checks in again: it re-provisions, a new record with a new id
    write_checkins(lab_dir / "pod", [checkin(A, "mac-001", "2026-12-06T07:05:00Z", "6.1.0.28")])
    for each in (api, podapi.Api(lab_dir / "pod")):
        _, root = call(each, body=request(("agentUuid", "EQUALS", A)))
        (record,) = assets(root)
        assert int(record.findtext("id")) == first + 5 and record.findtext("created") == "2026-12-06T07:05:00Z"
    assert len(Records(lab_dir / "pod").visible(OURS)) == 4


def test_a_line_being_written_waits_for_its_end(lab_dir):
    records = Records(lab_dir / "pod")
    with open(lab_dir / "pod" / "checkins.jsonl", "a") as f:
        f.write(json.dumps(checkin("f" * 8 + A[8:], "mac-009", "2026-12-06T08:00:00Z"))[:40])
    assert len(records.visible(OURS)) == 4
    with open(lab_dir / "pod" / "checkins.jsonl", "a") as f:
        f.write(json.dumps(checkin("f" * 8 + A[8:], "mac-009", "2026-12-06T08:00:00Z"))[40:] + "\n")
    assert [r.name for r in records.visible(OURS)][-1] == "mac-009"  # read whole once it ended


def test_credentials(api, lab_dir):
    user, password = creds(lab_dir)
    assert (lab_dir / "api-password").stat().st_mode & 0o777 == 0o600
    for auth in ((user, "wrong"), ("someone", password), (user, "")):
        answer, root = call(api, body=request(), auth=auth)
        assert answer.status == 200 and error(root) == ("INVALID_CREDENTIALS", "Authentication failed",
                                                         "Verify both, user and password credentials.")
        assert answer.headers["X-RateLimit-Remaining"] == "300"  # not counted as a call
    answer, root = call(api, body=request(), no_auth=True)
    assert answer.status == 401 and error(root)[0] == "INVALID_CREDENTIALS"
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    answer = api.handle(SEARCH, {"Authorization": "Basic !!!"}, request(), "pod")
    assert error(ET.fromstring(answer.body))[0] == "INVALID_CREDENTIALS"
    # api.json is read on every call: a test may change the password while the pod runs
    config = json.loads((lab_dir / "pod" / "api.json").read_text())
    (lab_dir / "pod" / "api.json").write_text(json.dumps({**config, "password": "new"}))
    assert error(call(api, body=request())[1])[0] == "INVALID_CREDENTIALS"
    assert call(api, body=request(), auth=(user, "new"))[1].findtext("responseCode") == "SUCCESS"


def test_only_the_configured_subscription_and_modules(api, lab_dir):
    config = json.loads((lab_dir / "pod" / "api.json").read_text())
    assert config["customer_id"] == OURS and config["modules"] == ["AGENT_VM", "AGENT_PC"]
    (lab_dir / "pod" / "api.json").write_text(json.dumps({**config, "customer_id": OTHER, "modules": ["AGENT_VM"]}))
    _, root = call(api, body=request())
    assert agent_ids(root) == [C] and assets(root)[0].findtext("agentInfo/activatedModule") == "AGENT_VM"
    # what the agents of that subscription are told to fetch follows; others keep the usual manifests
    assert pod.agent_modules(lab_dir / "pod", OTHER) == ["vm", "inv"]
    assert pod.agent_modules(lab_dir / "pod", OURS) == pod.ACTIVATED_MODULES


def test_rate_limit_answers_409_with_the_documented_body_and_headers(api, lab_dir, clock):
    config = json.loads((lab_dir / "pod" / "api.json").read_text())
    assert config["rate_limit"] == {"calls": 300, "window_s": 3600} and config["concurrency_limit"] == 2
    (lab_dir / "pod" / "api.json").write_text(json.dumps({**config, "rate_limit": {"calls": 3, "window_s": 20}}))
    remaining = []
    for step in range(3):
        answer, root = call(api, body=request())
        assert answer.status == 200 and root.findtext("responseCode") == "SUCCESS"
        assert answer.headers["X-RateLimit-Limit"] == "3" and answer.headers["X-RateLimit-Window-Sec"] == "20"
        assert answer.headers["X-RateLimit-ToWait-Sec"] == "0"
        assert answer.headers["X-Concurrency-Limit-Limit"] == "2"
        assert answer.headers["X-Concurrency-Limit-Running"] == "1"  # this call
        remaining.append(answer.headers["X-RateLimit-Remaining"])
        clock.now += 5
    assert remaining == ["2", "1", "0"]
    answer, root = call(api, path="/qps/rest/2.0/uninstall/am/asset/84047001")  # any call counts
    assert answer.status == 409 and root.tag == "SIMPLE_RETURN"
    assert root.findtext("RESPONSE/CODE") == "1965" and root.findtext("RESPONSE/TEXT") == podapi.BLOCKED_TEXT[1965]
    assert root.findtext("RESPONSE/DATETIME").endswith("Z")
    assert answer.headers["X-RateLimit-Remaining"] == "0" and answer.headers["X-RateLimit-ToWait-Sec"] == "5"
    assert len(assets(call(api, body=request(), auth=creds(lab_dir))[1])) == 0  # still blocked: nothing done
    clock.now += 5  # the first call left the window: one call free again
    answer, root = call(api, path="/qps/rest/2.0/uninstall/am/asset/84047001")
    assert answer.status == 200 and root.findtext("responseCode") == "SUCCESS"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert call(api, body=request())[0].headers["X-RateLimit-ToWait-Sec"] == "5"


def test_concurrency_limit(lab_dir):
    config = json.loads((lab_dir / "pod" / "api.json").read_text())
    (lab_dir / "pod" / "api.json").write_text(json.dumps({**config, "concurrency_limit": 1, "response_delay_s": 0.5}))
    api = podapi.Api(lab_dir / "pod")
    answers = []
    slow = threading.Thread(target=lambda: answers.append(call(api, body=request())))
    slow.start()
    while api.limits.running == 0:
        pass
    blocked, root = call(api, body=request())
    slow.join()
    assert answers[0][0].status == 200
    assert blocked.status == 409 and root.findtext("RESPONSE/CODE") == "1960"
    assert blocked.headers["X-Concurrency-Limit-Limit"] == "1" and blocked.headers["X-Concurrency-Limit-Running"] == "1"
    assert call(api, body=request())[0].status == 200  # the slow one is done


def test_unknown_call_is_refused(api):
    answer, root = call(api, "/qps/rest/2.0/delete/am/hostasset", request())
    assert answer.status == 404 and error(root)[0] == "INVALID_REQUEST"


def test_platform_personas_are_listed_and_combine():
    for trait in ("other-subscription", "duplicate-record"):
        assert personas.TRAITS[trait]
        host = personas.parse(f"{trait}+x86_64+proxy-only", 1)[0]
        assert host.as_list() == ["x86_64", "macos15", trait, "proxy-only"]


def test_duplicate_record_agent_loses_its_first_hostid_once(tmp_path, monkeypatch):
    """The daemon's cycle on a duplicate-record Mac: first id to a stray file, checks in again as new."""
    sent, issued = [], iter([B1, B2, D])
    monkeypatch.setattr(agentdaemon, "host_traits", lambda: ["duplicate-record"])
    monkeypatch.setattr(agentdaemon, "STRAY_HOSTIDS", (str(tmp_path / "stray/qualys/hostid"),))
    monkeypatch.setattr(agentdaemon, "run_ondemand", lambda *a, **k: None)

    def contact(config, hostid):
        sent.append(hostid)
        return {"hostid": hostid or next(issued)}

    monkeypatch.setattr(agentdaemon, "contact", contact)
    config = {"HostIdSearchDir": str(tmp_path / "etc")}
    assert agentdaemon.cycle(config, "") == B2
    assert sent == ["", ""]
    assert (tmp_path / "etc/qualys/hostid").read_text() == B2 + "\n"
    assert (tmp_path / "stray/qualys/hostid").read_text() == B1 + "\n"
    (tmp_path / "etc/qualys/hostid").unlink()  # lost again later: a new id, but no second stray, no extra contact
    assert agentdaemon.cycle(config, "") == D
    assert sent == ["", "", ""] and (tmp_path / "stray/qualys/hostid").read_text() == B1 + "\n"


def test_other_subscription_agent_checks_in_with_other_ids(monkeypatch):
    monkeypatch.setattr(agentdaemon, "host_traits", lambda: ["other-subscription"])
    monkeypatch.setattr(agentdaemon, "load_proxy_file", lambda: ([], []))
    monkeypatch.setattr(agentdaemon, "version", lambda: "6.1.0.20")
    monkeypatch.setattr(agentdaemon, "log", lambda *a, **k: None)
    sent = []
    monkeypatch.setattr(agentdaemon, "_check_in", lambda conn, uri, fields: sent.append(fields) or {"hostid": A})
    monkeypatch.setattr(agentdaemon, "_connection", lambda *a: None)
    config = {"ServerUri": "https://qagpublic.qg1.fleetlab.test/CloudAgent", "CustomerId": OURS, "ActivationId": ACT}
    assert agentdaemon.contact(config, A) == {"hostid": A}
    assert sent[0]["customer_id"] == OTHER and sent[0]["activation_id"] != ACT
