"""The Qualys platform API: find Cloud Agents by agent UUID, uninstall them (frees the licence).

QPS REST 2.0, Cloud Agent API / Asset Management. Every call and element is named in
docs/qualys-platform-api.md with its source; the sections are cited next to each call here.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable
from urllib.parse import urlsplit

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from fleetctl.errors import FleetError, UsageError

# The platforms whose Cloud Agent host (ServerUri) and API host public sources agree on (section b:
# Qualys's platform identification, as public clients carry it). Any other platform, or a private
# one, needs the qualys_api_url setting: fleetctl does not guess an API host.
API_HOSTS = {
    "qagpublic.qg1.apps.qualys.com": "qualysapi.qualys.com",
    "qagpublic.qg2.apps.qualys.com": "qualysapi.qg2.apps.qualys.com",
    "qagpublic.qg3.apps.qualys.com": "qualysapi.qg3.apps.qualys.com",
    "qagpublic.qg4.apps.qualys.com": "qualysapi.qg4.apps.qualys.com",
    "qagpublic.qg1.apps.qualys.eu": "qualysapi.qualys.eu",
    "qagpublic.qg2.apps.qualys.eu": "qualysapi.qg2.apps.qualys.eu",
    "qagpublic.qg1.apps.qualys.in": "qualysapi.qg1.apps.qualys.in",
    "qagpublic.qg1.apps.qualys.ca": "qualysapi.qg1.apps.qualys.ca",
    "qagpublic.qg1.apps.qualys.co.uk": "qualysapi.qg1.apps.qualys.co.uk",
    "qagpublic.qg1.apps.qualys.com.au": "qualysapi.qg1.apps.qualys.com.au",
}
SEARCH = "/qps/rest/2.0/search/am/hostasset"  # section c ("List Agents")
UNINSTALL = "/qps/rest/2.0/uninstall/am/asset/{id}"  # section d ("Uninstall a Single Agent")
AGENT_TAG = "Cloud Agent"  # section c: the tagName criterion that lists agent assets
PAGE = 100  # section g: records per page (the documented default; 1..1000 allowed)
BATCH = 50  # agent UUIDs per search (one IN criterion)
MAX_ANSWER = 16 << 20  # bytes of one answer read at most
THROTTLED = (409, 429)  # section f: 409 is documented when a limit blocks a call; 429 on newer APIs
TIMEOUT_S = 60


class ApiError(FleetError):
    """The platform refused or could not answer; TRANSIENT: trying later may work."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass
class Agent:
    """One host asset with a Cloud Agent, as the platform lists it (section c, HostAsset)."""

    asset_id: str
    name: str
    agent_uuid: str
    version: str | None = None
    last_checkin: datetime | None = None
    modules: list[str] = field(default_factory=list)
    status: str | None = None


def api_url(server_uri: str | None, setting: str | None, where: str) -> str:
    """The API's base URL: the qualys_api_url setting, else the documented host for the ServerUri's."""
    if setting:
        parts = urlsplit(str(setting))
        if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query:
            raise UsageError(f"{where}: qualys_api_url {setting!r}: write the API server's base URL, "
                             "e.g. https://qualysapi.qg2.apps.qualys.com")
        return f"https://{parts.netloc}"
    host = urlsplit(str(server_uri or "")).hostname or ""
    if host not in API_HOSTS:
        raise UsageError(f"{where}: no documented Qualys API server for the platform {host or '(no server_uri)'}; "
                         "set qualys_api_url (e.g. https://qualysapi.qg2.apps.qualys.com; Help > About in the "
                         "Qualys UI names it)")
    return f"https://{API_HOSTS[host]}"


def _request(criteria: list[tuple[str, str, str]], limit: int | None = None) -> bytes:
    """A ServiceRequest (sections c, g) built as XML, never by pasting text."""
    root = ET.Element("ServiceRequest")
    if limit:
        ET.SubElement(ET.SubElement(root, "preferences"), "limitResults").text = str(limit)
    if criteria:
        filters = ET.SubElement(root, "filters")
        for name, operator, value in criteria:
            ET.SubElement(filters, "Criteria", field=name, operator=operator).text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _text(node: ET.Element, path: str) -> str | None:
    found = node.find(path)
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def _time(text: str | None) -> datetime | None:
    """Section c: UTC like 2020-09-25T00:50:27Z, maybe with fractions of a second."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def parse_agents(root: ET.Element) -> list[Agent]:
    """HostAsset records with an agentInfo (section c); other assets are not agents."""
    agents = []
    for asset in root.iterfind("data/HostAsset"):
        uuid = _text(asset, "agentInfo/agentId")
        asset_id = _text(asset, "id")
        if not uuid or not asset_id:
            continue
        modules = _text(asset, "agentInfo/activatedModule") or ""
        agents.append(Agent(asset_id, _text(asset, "name") or _text(asset, "dnsHostName") or "", uuid.lower(),
                            _text(asset, "agentInfo/agentVersion"), _time(_text(asset, "agentInfo/lastCheckedIn")),
                            [m.strip() for m in modules.split(",") if m.strip()], _text(asset, "agentInfo/status")))
    return agents


def check_answer(status: int, body: bytes) -> ET.Element:
    """The ServiceResponse of a call (section e: read the body whatever the HTTP status)."""
    try:
        root = SafeET.fromstring(body)
    except (ET.ParseError, DefusedXmlException):
        raise ApiError(f"HTTP {status}, not a Qualys API answer ({len(body)} bytes)", transient=status >= 500) from None
    code = _text(root, "responseCode") or _text(root, "RESPONSE/CODE") or f"HTTP {status}"
    if code == "SUCCESS" and status < 400:
        return root
    message = _text(root, "responseErrorDetails/errorMessage") or _text(root, "RESPONSE/TEXT") or ""
    fix = _text(root, "responseErrorDetails/errorResolution")
    text = f"{code}: {message}" + (f" ({fix})" if fix else "")
    if code == "INVALID_CREDENTIALS":
        text += "; check secrets qualys_api_user and qualys_api_password"
    raise ApiError(text.strip(": "), transient=status >= 500)


class Client:
    """One API user on one platform. Throttled calls wait what the platform says (bounded by MAX_WAIT_S)."""

    def __init__(self, url: str, user: str, password: str, ca_bundle: str | None = None, max_wait_s: int = 300,
                 say: Callable[[str], None] = lambda text: None, sleep: Callable[[float], None] = time.sleep):
        import requests  # here, not at the top: every `fleetctl run` imports this module, few call the API

        self.url, self.max_wait_s, self.say, self.sleep = url, max_wait_s, say, sleep
        self.http = requests.Session()
        self.http.auth = (user, password)  # section a: HTTP Basic
        self.http.headers.update({"Content-Type": "text/xml", "X-Requested-With": "fleetctl"})
        self.verify = ca_bundle or True  # per request: REQUESTS_CA_BUNDLE in the environment beats a session's
        self.calls = 0

    def post(self, path: str, body: bytes) -> ET.Element:
        import requests
        import urllib3

        waited = 0.0
        for attempt in range(1, 6):
            try:
                reply = self.http.post(self.url + path, data=body, timeout=TIMEOUT_S, stream=True, verify=self.verify)
                try:
                    content = reply.raw.read(MAX_ANSWER + 1, decode_content=True)
                finally:
                    reply.close()
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise ApiError(f"{self.url}: {type(e).__name__}: {e}", transient=True) from None
            self.calls += 1
            limits = {k: v for k, v in reply.headers.items() if k.lower().startswith(("x-ratelimit", "x-concurrency"))}
            self.say(f"POST {self.url}{path}: HTTP {reply.status_code}"
                     + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(limits.items())) + ")" if limits else ""))
            if len(content) > MAX_ANSWER:
                raise ApiError(f"{self.url}{path}: answer over {MAX_ANSWER >> 20} MB")
            if reply.status_code in THROTTLED or reply.status_code >= 500:
                wait = _wait_s(reply.headers, attempt)
                if waited + wait > self.max_wait_s:
                    raise ApiError(f"{self.url}: HTTP {reply.status_code}, the platform asks to wait {wait:.0f}s "
                                   f"more (rate or concurrency limit); try again later", transient=True)
                self.say(f"waiting {wait:.0f}s, as the platform asks (HTTP {reply.status_code})")
                self.sleep(wait)
                waited += wait
                continue
            return check_answer(reply.status_code, content)
        raise ApiError(f"{self.url}{path}: no answer after 5 tries", transient=True)

    def agents(self, field_name: str, values: Iterable[str]) -> list[Agent]:
        """Every agent whose FIELD (agentUuid or name) is one of VALUES, all pages (section g)."""
        values = sorted(set(values))
        found: list[Agent] = []
        for start in range(0, len(values), BATCH):
            criteria = [("tagName", "EQUALS", AGENT_TAG), (field_name, "IN", ",".join(values[start:start + BATCH]))]
            after = None
            for _ in range(10_000):  # bounded: each page moves past lastId
                page = self.post(SEARCH, _request(criteria + ([("id", "GREATER", after)] if after else []), PAGE))
                found += parse_agents(page)
                last = _text(page, "lastId")
                if _text(page, "hasMoreRecords") != "true" or not last or last == after:
                    break
                after = last
        return found

    def uninstall(self, asset_id: str) -> None:
        """Section d: the platform removes the agent, its asset record, licence and findings."""
        if not asset_id.isdigit():
            raise ApiError(f"asset id {asset_id!r} is not a number")
        root = self.post(UNINSTALL.format(id=asset_id), _request([]))
        done = {_text(a, ".") for a in root.iterfind("data/Asset/id")}
        if asset_id not in done:
            raise ApiError(f"uninstall of asset {asset_id}: the platform answered SUCCESS without that asset")


def _wait_s(headers, attempt: int) -> float:
    """X-RateLimit-ToWait-Sec (section f), else Retry-After, else a growing pause."""
    for name in ("X-RateLimit-ToWait-Sec", "Retry-After"):
        value = headers.get(name, "")
        if value.strip().isdigit():
            return max(1.0, float(value))
    return float(min(60, 5 * 2 ** (attempt - 1)))
