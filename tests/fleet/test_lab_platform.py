"""The lab pod's Qualys API over real HTTPS, as the controller calls it: Python requests, the
lab's CA, the API user from the lab's files; the records come from what the Macs' agents did."""
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests

from conftest import Lab, Mac, ACTIVATION, CUSTOMER

SEARCH = "/qps/rest/2.0/search/am/hostasset"
UNINSTALL = "/qps/rest/2.0/uninstall/am/asset/"
STRAY_HOSTID = "/private/var/qualys/hostid"  # where a duplicate-record Mac's first host id went


@pytest.fixture(scope="module")
def platform(make_lab) -> tuple[Lab, dict[str, str]]:
    """mac-001 an ordinary Mac, mac-002 other-subscription, mac-003 duplicate-record, mac-004 an
    ordinary Intel Mac (its record gets uninstalled): all installed and provisioned, with hostids."""
    lab, _ = make_lab(4, "arm64,other-subscription,duplicate-record,x86_64", "platform")

    def provision(mac: Mac) -> str:
        mac.install()
        mac.provision()
        return mac.wait_hostid(timeout=30)

    macs = [lab.mac(f"mac-00{n}") for n in range(1, 5)]
    with ThreadPoolExecutor(4) as pool:
        hostids = dict(zip([m.name for m in macs], pool.map(provision, macs)))
    for hostid in hostids.values():
        lab.wait_checkin(hostid)
    return lab, hostids


def call(lab: Lab, path: str, body: bytes = b"", auth=None) -> tuple[requests.Response, ET.Element]:
    vars_ = lab.inventory["all"]["vars"]
    answer = requests.post(vars_["qualys_api_url"] + path, data=body, auth=auth or lab.api_credentials(),
                           verify=vars_["qualys_api_ca"], timeout=10,
                           headers={"Content-Type": "text/xml", "X-Requested-With": "fleetctl tests"})
    return answer, ET.fromstring(answer.content)


def search(*criteria: tuple[str, str, str], limit: int = 100) -> bytes:
    root = ET.Element("ServiceRequest")
    ET.SubElement(ET.SubElement(root, "preferences"), "limitResults").text = str(limit)
    filters = ET.SubElement(root, "filters")
    for field, operator, value in (("tagName", "EQUALS", "Cloud Agent"), *criteria):
        ET.SubElement(filters, "Criteria", field=field, operator=operator).text = value
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def found(lab: Lab, *criteria) -> list[ET.Element]:
    answer, root = call(lab, SEARCH, search(*criteria))
    assert answer.status_code == 200 and root.findtext("responseCode") == "SUCCESS", answer.text
    return root.findall("data/HostAsset")


def test_inventory_points_the_controller_at_the_api(platform):
    lab, _ = platform
    vars_ = lab.inventory["all"]["vars"]
    assert vars_["qualys_api_url"].startswith("https://198.19.") and vars_["qualys_api_ca"].endswith("/pod/cert.pem")
    assert vars_["lab_api_user"] == lab.api_settings()["user"]
    assert (lab.dir / "api-password").stat().st_mode & 0o777 == 0o600
    assert lab.api_settings()["customer_id"] == CUSTOMER
    answer, root = call(lab, SEARCH, search(), auth=(vars_["lab_api_user"], "wrong"))
    assert answer.status_code == 200 and root.findtext("responseCode") == "INVALID_CREDENTIALS"
    with pytest.raises(requests.exceptions.SSLError):  # the pod is trusted through the lab's CA only
        requests.post(vars_["qualys_api_url"] + SEARCH, data=search(), timeout=10)


def test_the_mac_is_found_by_its_hostid_with_version_and_last_check_in(platform):
    lab, hostids = platform
    mac = lab.mac("mac-001")
    (asset,) = found(lab, ("agentUuid", "EQUALS", hostids["mac-001"]))
    last = lab.checkins_from(mac)[-1]
    assert asset.findtext("name") == "mac-001" and asset.findtext("trackingMethod") == "QAGENT"
    assert asset.findtext("agentInfo/agentId") == hostids["mac-001"]
    assert asset.findtext("agentInfo/agentVersion") == "6.1.0.20" == last["agent_version"]
    checked = asset.findtext("agentInfo/lastCheckedIn")
    assert checked == last["time"]
    age = datetime.now(timezone.utc) - datetime.strptime(checked, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert age.total_seconds() < 300
    assert asset.findtext("agentInfo/connectedFrom") == mac.address == asset.findtext("address")
    assert asset.findtext("os") == "macOS 15.1" and asset.findtext("agentInfo/activatedModule") == "AGENT_VM,AGENT_PC"
    assert asset.findtext("agentInfo/activationKey/activationId") == ACTIVATION
    both = found(lab, ("agentUuid", "IN", f"{hostids['mac-004']},{hostids['mac-001']}"))
    assert sorted(a.findtext("name") for a in both) == ["mac-001", "mac-004"]
    ids = [int(a.findtext("id")) for a in both]
    assert ids == sorted(ids)  # by asset id


def test_other_subscription_is_never_found(platform):
    lab, hostids = platform
    mac = lab.mac("mac-002")
    assert found(lab, ("agentUuid", "EQUALS", hostids["mac-002"])) == []
    assert found(lab, ("name", "EQUALS", "mac-002")) == []
    assert "mac-002" not in [a.findtext("name") for a in found(lab)]
    # the Mac looks provisioned for our subscription; its agent reports to another one
    conf = "'/Library/Application Support/QualysCloudAgent/Config/qualys-cloud-agent.conf'"
    assert f"CustomerId={CUSTOMER}" in mac.ok(f"sudo cat {conf}")
    assert {c["customer_id"] for c in lab.checkins_from(mac)} == {"0d5e9c1b-7a3f-4e62-9b18-c4f2a6d8e301"}


def test_duplicate_record_two_records_one_name(platform):
    lab, hostids = platform
    mac = lab.mac("mac-003")
    lost = mac.ok(f"cat {STRAY_HOSTID}").strip()
    assert lost and lost != hostids["mac-003"]
    old, new = found(lab, ("name", "EQUALS", "mac-003"))
    assert [old.findtext("agentInfo/agentId"), new.findtext("agentInfo/agentId")] == [lost, hostids["mac-003"]]
    assert int(old.findtext("id")) < int(new.findtext("id"))
    seen = len(lab.checkins())
    mac.provision()  # wakes the agent: it checks in again, with the id it kept
    lab.wait_checkin(hostids["mac-003"], after=seen)
    assert [c["hostid"] for c in lab.checkins_from(mac)].count(lost) == 1  # the older never checks in again
    old_again, new_again = found(lab, ("name", "EQUALS", "mac-003"))
    assert old_again.findtext("agentInfo/lastCheckedIn") == old.findtext("agentInfo/lastCheckedIn")
    assert new_again.findtext("agentInfo/lastCheckedIn") >= new.findtext("agentInfo/lastCheckedIn")


def test_uninstall_removes_the_record_and_a_new_check_in_makes_a_new_one(platform):
    lab, hostids = platform
    mac = lab.mac("mac-004")
    (asset,) = found(lab, ("agentUuid", "EQUALS", hostids["mac-004"]))
    asset_id = asset.findtext("id")
    empty = b"<?xml version='1.0' encoding='UTF-8'?><ServiceRequest></ServiceRequest>"
    answer, root = call(lab, UNINSTALL + asset_id, empty)
    assert answer.status_code == 200 and root.findtext("responseCode") == "SUCCESS"
    assert root.findtext("data/Asset/id") == asset_id
    assert found(lab, ("agentUuid", "EQUALS", hostids["mac-004"])) == []
    assert (lab.dir / "pod" / "uninstalled.jsonl").exists()
    _, root = call(lab, UNINSTALL + asset_id, empty)
    assert root.findtext("responseCode") == "NOT_FOUND" and root.findtext("responseErrorDetails/errorMessage")
    seen = len(lab.checkins())
    mac.provision()  # the agent, still on the Mac, checks in again: it re-provisions
    lab.wait_checkin(hostids["mac-004"], after=seen)
    (again,) = found(lab, ("agentUuid", "EQUALS", hostids["mac-004"]))
    assert int(again.findtext("id")) > int(asset_id)


def test_rate_and_concurrency_limits_answer_409(platform):
    lab, _ = platform
    old = lab.set_api(rate_limit={"calls": 3, "window_s": 4})
    try:
        time.sleep(4)  # the other tests' calls leave the (new, short) window
        answers = [call(lab, SEARCH, search()) for _ in range(5)]
        statuses = [a.status_code for a, _ in answers]
        assert statuses == [200, 200, 200, 409, 409]
        ok = [a for a, _ in answers if a.status_code == 200]
        assert ok[-1].headers["X-RateLimit-Remaining"] == "0" and ok[-1].headers["X-RateLimit-Limit"] == "3"
        blocked, root = answers[-1]
        assert root.tag == "SIMPLE_RETURN" and root.findtext("RESPONSE/CODE") == "1965"
        wait = int(blocked.headers["X-RateLimit-ToWait-Sec"])
        assert 1 <= wait <= 4 and blocked.headers["X-RateLimit-Window-Sec"] == "4"
        for header in ("X-Concurrency-Limit-Limit", "X-Concurrency-Limit-Running"):
            assert header in blocked.headers
        time.sleep(wait)
        assert call(lab, SEARCH, search())[0].status_code == 200  # the window freed a call
        lab.set_api(rate_limit=old["rate_limit"], concurrency_limit=1, response_delay_s=1)
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: call(lab, SEARCH, search()), range(2)))
        assert sorted(a.status_code for a, _ in both) == [200, 409]
        assert next(r for a, r in both if a.status_code == 409).findtext("RESPONSE/CODE") == "1960"
    finally:
        lab.set_api(**old)
