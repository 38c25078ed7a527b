"""The Qualys Cloud Agent on macOS, as the controller models it (see shared/spec).

Paths, the configuration tool's options and their rules, and the proxy file's exact
content. Everything here is checked before any Mac is contacted.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

APP = "/Applications/QualysCloudAgent.app"
TOOL_PATHS = (  # the vendor's Intune sample checks the legacy path first
    "/usr/local/qualys/cloud-agent/bin/qualys-cloud-agent.sh",
    f"{APP}/Contents/MacOS/qualys-cloud-agent.sh",
)
APP_BIN = f"{APP}/Contents/MacOS"
UNINSTALL_PATHS = ("/usr/local/qualys/cloud-agent/bin/qagent_uninstall.sh", f"{APP_BIN}/qagent_uninstall.sh")
PLIST = "/Library/LaunchDaemons/com.qualys.cloud-agent.plist"
CONFIG_DIR = "/Library/Application Support/QualysCloudAgent/Config"
PROXY_FILE = f"{CONFIG_DIR}/proxy"
CA_BUNDLE = f"{APP}/Contents/Config/cert/ca-bundle.crt"
LABEL = "com.qualys.cloud-agent"
PACKAGE_ID = "com.qualys.cloud-agent"
MIN_MEMORY = 512 << 20
MIN_DISK_KB = 100 * 1024
MAX_PROXIES = 5

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
HOST = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$")


def hostid_path(search_dir: str) -> str:
    """The configuration tool appends qualys/hostid to HostIdSearchDir."""
    return os.path.join(search_dir, "qualys", "hostid")


@dataclass(frozen=True)
class Paths:
    """Where one Mac's agent logs and keeps its hostid. fleetctl remembers on the Mac what it
    applied (applied-state file) so every later action reads the agent where it really is."""

    log_dir: str = "/var/log/qualys/"
    log_dest: str = "file"  # or syslog: the macOS unified log
    hostid_dir: str = "/etc/"

    OPTIONS = {"LogFileDir": "log_dir", "LogDestType": "log_dest", "HostIdSearchDir": "hostid_dir"}
    PREFIX = "path."  # how they are remembered in the applied-state file, beside the digests

    def with_options(self, options: dict[str, str]) -> "Paths":
        """These paths after the configuration tool applied OPTIONS."""
        changes = {field: options[name] for name, field in self.OPTIONS.items() if name in options}
        return Paths(**{**self.__dict__, **changes})

    @classmethod
    def remembered(cls, applied: dict[str, str]) -> "Paths":
        return cls().with_options({k.removeprefix(cls.PREFIX): v for k, v in applied.items()
                                   if k.startswith(cls.PREFIX)})

    def remember(self) -> dict[str, str]:
        return {self.PREFIX + name: getattr(self, field) for name, field in self.OPTIONS.items()}

    @property
    def log_file(self) -> str:
        return os.path.join(self.log_dir, "qualys-cloud-agent.log")

    @property
    def hostid_file(self) -> str:
        return hostid_path(self.hostid_dir)


def _int_between(low: int, high: int):
    def check(value: str) -> str | None:
        if re.fullmatch(r"-?\d+", value) and low <= int(value) <= high:
            return None
        return f"a whole number from {low} to {high}"
    return check


def _one_of(*choices: str):
    return lambda value: None if value in choices else "one of " + ", ".join(choices)


def _absolute(value: str) -> str | None:
    """An absolute directory without `..`: fleetctl remembers and reads these paths on the Mac."""
    if value.startswith("/") and "\n" not in value and ".." not in value.split("/"):
        return None
    return "an absolute directory without '..', e.g. /etc/"


def _server_uri(value: str) -> str | None:
    uri = urllib.parse.urlsplit(value)
    if (uri.scheme == "https" and uri.hostname and HOST.match(uri.hostname) and not uri.query and not uri.fragment
            and uri.path.endswith(("/CloudAgent", "/CloudAgent/"))):  # the trailing slash: as public Qualys commands
        return None
    return "https://<your Qualys platform>/CloudAgent, e.g. https://qagpublic.qg2.apps.qualys.com/CloudAgent"


def _name(value: str) -> str | None:
    return None if NAME.match(value) else "an existing account or group name"


def _uuid(value: str) -> str | None:
    return None if UUID.match(value) else "a UUID like 4b2ea2a4-5d0c-4d8f-9d3a-0d7c2f2d1a11"


def _command(value: str) -> str | None:
    return None if value.strip() and "\n" not in value else "a command such as sudo or pbrun"


# Option -> check returning what a valid value looks like, or None when the value is fine.
OPTIONS = {
    "ActivationId": _uuid,
    "CustomerId": _uuid,
    "ServerUri": _server_uri,
    "LogLevel": _int_between(0, 5),
    "LogFileDir": _absolute,
    "LogDestType": _one_of("file", "syslog"),
    "UseSudo": _one_of("0", "1"),
    "SudoCommand": _command,
    "User": _name,
    "Group": _name,
    "HostIdSearchDir": _absolute,
    "CmdMaxTimeOut": _int_between(1, 10_000_000),
    "ProcessPriority": _int_between(-20, 19),
    "QualysProxyOrder": _one_of("sequential", "seq", "random"),
}
SECRET_OPTIONS = ("ActivationId", "CustomerId")


def option_problem(name: str, value: object) -> str | None:
    """Why NAME=VALUE would be refused by the configuration tool, or None."""
    check = OPTIONS.get(name)
    if check is None:
        return f"unknown option {name!r}; options are: {', '.join(OPTIONS)}"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    wanted = check(text)
    return f"{name} must be {wanted}" if wanted else None


@dataclass(frozen=True)
class ProxyServer:
    """One of the 1-5 proxies, with its own optional credentials.

    A user or password that starts with `#` was encrypted with the package's string-util and
    is written as it is (the guide); any other is percent-encoded (`@ : $ ;` and the rest).
    """

    url: str  # https://host[:port], no credentials
    user: str | None = None
    password: str | None = None

    @property
    def encrypted(self) -> bool:
        return any(v is not None and v.startswith("#") for v in (self.user, self.password))

    @property
    def address(self) -> str:
        """host:port the agent dials: a URL without a port means https's 443."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 443}"

    def in_file(self) -> str:
        if self.user is None:
            return self.url
        scheme, rest = self.url.split("://", 1)
        creds = f"{_credential(self.user)}:{_credential(self.password or '')}"
        return f"{scheme}://{creds}@{rest}"


def _credential(value: str) -> str:
    return value if value.startswith("#") else urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class Proxy:
    """What goes into the agent's proxy file."""

    servers: tuple[ProxyServer, ...]
    variable: str = "qualys_https_proxy"
    no_proxy: str | None = None

    def file_content(self) -> str:
        """The proxy file, exactly as the spec describes it."""
        urls = [s.in_file() for s in self.servers]
        value = urls[0] if len(urls) == 1 else '"' + ";".join(urls) + '"'
        if self.no_proxy:
            return f"export {self.variable}={value}\nexport no_proxy={self.no_proxy}\n"
        return f"{self.variable}={value}\n"


def proxy_url_problem(url: str) -> str | None:
    """Why URL cannot be a proxy in the agent's proxy file, or None."""
    if "://" not in url:
        return f"proxy URL {url!r} has no scheme; write https://host:port"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        return f"proxy URL {url!r} must start with https:// (the agent's proxy file format)"
    if parts.username is not None:
        return f"proxy URL {url!r} contains credentials; give them as user: and password_secret: of that proxy instead"
    try:
        port = parts.port
    except ValueError:
        return f"proxy URL {url!r} has a bad port"
    if not parts.hostname or not HOST.match(parts.hostname) or parts.path not in ("", "/"):
        return f"proxy URL {url!r} must be https://host[:port] with an IPv4 address or a DNS name"
    del port
    return None


PROXY_LINE = re.compile(r"^(export )?(qualys_https_proxy|https_proxy)=(.+)$")
CREDENTIAL = r"(?:#[^:@/;\"\s]+|(?:[A-Za-z0-9\-._~!&'()*+,=]|%[0-9A-Fa-f]{2})+)"
PROXY_IN_FILE = re.compile(rf"^https://(?:{CREDENTIAL}:{CREDENTIAL}@)?(?P<host>[^:/@;\"\s]+)(?::\d{{1,5}})?/?$")


def proxy_file_problem(text: str) -> str | None:
    """Why TEXT is not a proxy file as the guide defines it (`fleetctl doctor`), or None."""
    lines = text.splitlines()
    if not lines:
        return "empty proxy file"
    match = PROXY_LINE.match(lines[0])
    if not match:
        return f"first line is not qualys_https_proxy=... or https_proxy=...: {lines[0][:120]}"
    exported, rest = bool(match[1]), lines[1:]
    if exported and (len(rest) != 1 or not re.fullmatch(r"export no_proxy=\S+", rest[0])):
        return "an 'export ..._proxy=' line must be followed by exactly one 'export no_proxy=<pod domain>' line"
    if not exported and rest:
        return f"more than one line: {rest[0][:120]}"
    value = match[3]
    quoted = len(value) >= 2 and value[0] == value[-1] == '"'
    urls = value[1:-1].split(";") if quoted else [value]
    if ";" in value and not quoted:
        return "several proxies must be inside double quotes"
    if not 1 <= len(urls) <= MAX_PROXIES:
        return f"{len(urls)} proxies (the agent takes 1 to {MAX_PROXIES})"
    bad = next((u for u in urls if not PROXY_IN_FILE.match(u) or not HOST.match(PROXY_IN_FILE.match(u)["host"])), None)
    return f"not https://[user:password@]host[:port]: {bad[:120]}" if bad is not None else None
