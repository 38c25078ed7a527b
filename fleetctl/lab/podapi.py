"""The lab pod's Qualys Cloud Agent / Asset Management API (QPS REST 2.0), answered from the
pod's own records (podrecords.py) in the documented formats (docs/qualys-platform-api.md, the
fixtures in tests/unit/cases/platform/). pod.py routes every POST under /qps/ here.

  POST /qps/rest/2.0/search/am/hostasset       CA-LIST "List Agents", CA-PAGE "Output Pagination and
       Truncation": <ServiceRequest><preferences><limitResults> 1..1000 (default 100), <filters>
       <Criteria field operator>value</Criteria>...; criteria are ANDed. Fields: tagName EQUALS
       (required, "Cloud Agent", to list agents), agentUuid EQUALS/IN, name EQUALS/IN,
       id EQUALS/IN/GREATER (IN: comma-separated). Answer: responseCode, count (this page),
       hasMoreRecords, lastId (when more), data/HostAsset*, by asset id.
  POST /qps/rest/2.0/uninstall/am/asset/<id>   CA-UNINST1 "Uninstall a Single Agent": responseCode,
       count 1, data/Asset/id; the record is gone for good (podrecords.py keeps it so).

Authentication (CA-AUTH): HTTP Basic. Wrong credentials: HTTP 200, INVALID_CREDENTIALS (as J1
recorded it). No Authorization header at all: HTTP 401 with the same body and a Basic challenge
(undocumented; a web server's usual answer, and a harsher one for a client than 200).
Unknown fields, operators or malformed values: INVALID_REQUEST with responseErrorDetails.
An asset id the subscription does not have (never or no longer): NOT_FOUND — the code is not
documented anywhere found (docs/qualys-platform-api.md, e); NOT_FOUND is a plausible choice.
Rate and concurrency limits: podlimits.py; a blocked call gets HTTP 409 and SIMPLE_RETURN 1965
(rate) or 1960 (concurrency), the VM API's documented body (QPS's own is not documented).
XML is built and parsed with ElementTree (expat refuses entity expansion bombs).
"""
from __future__ import annotations

import base64
import hmac
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from fleetctl.lab.podlimits import ApiConfig, Limits, read_config
from fleetctl.lab.podrecords import Record, Records

XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("xsi", XSI)
SEARCH = re.compile(r"/qps/rest/2\.0/search/am/hostasset/?")
UNINSTALL = re.compile(r"/qps/rest/2\.0/uninstall/am/asset/([^/]*)/?")
OPERATORS = {"tagName": ("EQUALS",), "agentUuid": ("EQUALS", "IN"), "name": ("EQUALS", "IN"),
             "id": ("EQUALS", "IN", "GREATER")}
CLOUD_AGENT_TAG = ("7517812", "Cloud Agent")
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_API_BODY = 1 << 20
BLOCKED_TEXT = {  # VM API Appendix D codes; 1965's text as tests/unit/cases/platform/error_rate_limit.xml
    1965: "The requested operation is blocked by one or more existing Business Objects",
    1960: "This API cannot be run again until {running} currently running instance(s) have finished.",
}


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """A non-SUCCESS ServiceResponse."""

    def __init__(self, code: str, message: str, resolution: str, status: int = 200):
        super().__init__(message)
        self.code, self.message, self.resolution, self.status = code, message, resolution, status


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def _response(host: str, schema: str) -> ET.Element:
    location = f"https://{host}/qps/xsd/2.0/am/{schema}"
    return ET.Element("ServiceResponse", {f"{{{XSI}}}noNamespaceSchemaLocation": location})


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def error_body(host: str, error: ApiError) -> bytes:
    root = _response(host, "hostasset.xsd")
    _sub(root, "responseCode", error.code)
    details = _sub(root, "responseErrorDetails")
    _sub(details, "errorMessage", error.message)
    _sub(details, "errorResolution", error.resolution)
    return _xml(root)


def blocked_body(code: int, running: str) -> bytes:
    root = ET.Element("SIMPLE_RETURN")
    response = _sub(root, "RESPONSE")
    _sub(response, "DATETIME", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _sub(response, "CODE", code)
    _sub(response, "TEXT", BLOCKED_TEXT[code].format(running=running))
    return _xml(root)


def host_asset(parent: ET.Element, record: Record, modules: list[str]) -> None:
    """One HostAsset, the fields of tests/unit/cases/platform/search_hostasset.xml."""
    asset = _sub(parent, "HostAsset")
    for tag, value in (("id", record.id), ("name", record.name), ("created", record.created),
                       ("modified", record.last_checkin), ("type", "HOST")):
        _sub(asset, tag, value)
    tag = _sub(_sub(_sub(asset, "tags"), "list"), "TagSimple")
    _sub(tag, "id", CLOUD_AGENT_TAG[0])
    _sub(tag, "name", CLOUD_AGENT_TAG[1])
    _sub(asset, "qwebHostId", record.qweb_id)
    _sub(asset, "dnsHostName", record.name)
    info = _sub(asset, "agentInfo")
    for tag, value in (("agentVersion", record.agent_version), ("agentId", record.hostid),
                       ("status", "STATUS_ACTIVE"), ("lastCheckedIn", record.last_checkin),
                       ("connectedFrom", record.peer), ("platform", "Mac"), ("activatedModule", ",".join(modules))):
        _sub(info, tag, value)
    _sub(_sub(info, "activationKey"), "activationId", record.activation_id)
    _sub(asset, "os", record.os)
    _sub(asset, "address", record.address)
    _sub(asset, "trackingMethod", "QAGENT")


def _request(body: bytes) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise ApiError("INVALID_REQUEST", f"Invalid XML in request: {e}.",
                       "Send a well-formed ServiceRequest.") from None
    if root.tag != "ServiceRequest":
        raise ApiError("INVALID_REQUEST", f"Unexpected root element '{root.tag}'.", "Send a ServiceRequest.")
    return root


def _long(field_name: str, text: str) -> int:
    if not re.fullmatch(r"\s*\d{1,18}\s*", text):
        raise ApiError("INVALID_REQUEST", f"Criteria: Invalid value format for criteria '{field_name}' ({text}).",
                       "Specify criteria value(s) as Long.")
    return int(text)


def _criteria(root: ET.Element) -> list[tuple[str, str, list[str]]]:
    found = []
    for criteria in root.iterfind("filters/Criteria"):
        name, operator, text = criteria.get("field", ""), criteria.get("operator", ""), (criteria.text or "").strip()
        if name not in OPERATORS:
            raise ApiError("INVALID_REQUEST", f"Criteria: Unsupported field '{name}'.",
                           f"Use one of the searchable fields: {', '.join(OPERATORS)}.")
        if operator not in OPERATORS[name]:
            raise ApiError("INVALID_REQUEST", f"Criteria: Unsupported operator '{operator}' for field '{name}'.",
                           f"Use one of: {', '.join(OPERATORS[name])}.")
        values = [v.strip() for v in text.split(",")] if operator == "IN" else [text]
        if not all(values):
            raise ApiError("INVALID_REQUEST", f"Criteria: No value for criteria '{name}'.", "Specify a value.")
        if name == "id":
            values = [str(_long(name, v)) for v in values]
        found.append((name, operator, values))
    if not any(n == "tagName" and v == [CLOUD_AGENT_TAG[1]] for n, _, v in found):
        raise ApiError("INVALID_REQUEST", "Criteria: tagName EQUALS 'Cloud Agent' is required to list agents.",
                       'Add <Criteria field="tagName" operator="EQUALS">Cloud Agent</Criteria>.')
    return found


def _limit(root: ET.Element) -> int:
    text = root.findtext("preferences/limitResults")
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"\s*\d{1,7}\s*", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError("INVALID_REQUEST", f"Invalid value for limitResults ({text}).",
                       f"Specify limitResults from 1 to {MAX_LIMIT}.")
    return int(text)


def _matches(record: Record, name: str, operator: str, values: list[str]) -> bool:
    if name == "tagName":
        return values == [CLOUD_AGENT_TAG[1]]
    if name == "id" and operator == "GREATER":
        return record.id > int(values[0])
    return str(getattr(record, {"agentUuid": "hostid", "name": "name", "id": "id"}[name])) in values


class Api:
    """The API of one pod: its records, its settings (re-read per call), its limits."""

    def __init__(self, pod_dir: Path, records: Records | None = None, limits: Limits | None = None):
        self.pod_dir = pod_dir
        self.records = records or Records(pod_dir)
        self.limits = limits or Limits()

    def handle(self, path: str, headers: dict[str, str], body: bytes, host: str) -> Answer:
        """One POST under /qps/: HEADERS as sent (any case), HOST: the name the client used."""
        headers = {k.lower(): v for k, v in headers.items()}
        config = read_config(self.pod_dir)
        path = path.partition("?")[0]
        auth = headers.get("authorization")
        if not self._authorized(config, auth):
            error = ApiError("INVALID_CREDENTIALS", "Authentication failed",
                             "Verify both, user and password credentials.", 401 if auth is None else 200)
            extra = {"WWW-Authenticate": 'Basic realm="Qualys API"'} if auth is None else {}
            return self._answer(error.status, error_body(host, error), {**self.limits.peek(config), **extra})
        admission = self.limits.admit(config)
        if admission.code:
            body = blocked_body(admission.code, admission.headers["X-Concurrency-Limit-Running"])
            return self._answer(409, body, admission.headers)
        try:
            if config.delay_s:
                time.sleep(config.delay_s)
            try:
                status, body = 200, self._dispatch(config, path, body, host)
            except ApiError as error:
                status, body = error.status, error_body(host, error)
        finally:
            self.limits.done()
        return self._answer(status, body, admission.headers)

    @staticmethod
    def _answer(status: int, body: bytes, headers: dict[str, str]) -> Answer:
        return Answer(status, body, {"Content-Type": "application/xml;charset=UTF-8", **headers})

    @staticmethod
    def _authorized(config: ApiConfig, auth: str | None) -> bool:
        scheme, _, encoded = (auth or "").partition(" ")
        if scheme.lower() != "basic" or not config.user:
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # both compared, always: how long the answer takes tells nothing about either
        return bool(sep) & hmac.compare_digest(user.encode(), config.user.encode()) \
            & hmac.compare_digest(password.encode(), config.password.encode())

    def _dispatch(self, config: ApiConfig, path: str, body: bytes, host: str) -> bytes:
        if SEARCH.fullmatch(path):
            return self.search(config, _request(body), host)
        uninstall = UNINSTALL.fullmatch(path)
        if uninstall:
            if body.strip():
                _request(body)
            return self.uninstall(config, _long("id", uninstall.group(1)), host)
        raise ApiError("INVALID_REQUEST", f"Unknown API call: POST {path}.",
                       "See the Cloud Agent API guide for the calls and their URLs.", 404)

    def search(self, config: ApiConfig, request: ET.Element, host: str) -> bytes:
        limit, criteria = _limit(request), _criteria(request)
        found = [r for r in self.records.visible(config.customer_id)
                 if all(_matches(r, *c) for c in criteria)]
        page = found[:limit]
        root = _response(host, "hostasset.xsd")
        _sub(root, "responseCode", "SUCCESS")
        _sub(root, "count", len(page))
        if page:  # no match: responseCode and count 0 only (J1's recording, search_empty.xml)
            _sub(root, "hasMoreRecords", "true" if len(found) > limit else "false")
        if len(found) > limit:
            _sub(root, "lastId", page[-1].id)
        if page:
            data = _sub(root, "data")
            for record in page:
                host_asset(data, record, config.modules)
        return _xml(root)

    def uninstall(self, config: ApiConfig, asset_id: int, host: str) -> bytes:
        if self.records.uninstall(asset_id, config.customer_id) is None:
            raise ApiError("NOT_FOUND", f"Asset with id {asset_id} not found.",
                           "Search the subscription's host assets for a current id.")
        root = _response(host, "asset.xsd")
        _sub(root, "responseCode", "SUCCESS")
        _sub(root, "count", 1)
        _sub(_sub(_sub(root, "data"), "Asset"), "id", asset_id)
        return _xml(root)
