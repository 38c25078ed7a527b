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
LOG_FILE = "/var/log/qualys/qualys-cloud-agent.log"
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


def _int_between(low: int, high: int):
    def check(value: str) -> str | None:
        if re.fullmatch(r"-?\d+", value) and low <= int(value) <= high:
            return None
        return f"a whole number from {low} to {high}"
    return check


def _one_of(*choices: str):
    return lambda value: None if value in choices else "one of " + ", ".join(choices)


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") and "\n" not in value else "an absolute directory, e.g. /etc/"


def _server_uri(value: str) -> str | None:
    uri = urllib.parse.urlsplit(value)
    if uri.scheme == "https" and uri.hostname and HOST.match(uri.hostname) and uri.path.rstrip("/").endswith("/CloudAgent"):
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
class Proxy:
    """What goes into the agent's proxy file."""

    urls: tuple[str, ...]
    variable: str = "qualys_https_proxy"
    user: str | None = None
    password: str | None = None
    encrypted: bool = False  # user/password were pre-encrypted with string-util ('#...')
    no_proxy: str | None = None

    def file_content(self) -> str:
        """The proxy file, exactly as the spec describes it."""
        urls = [self._with_credentials(u) for u in self.urls]
        value = urls[0] if len(urls) == 1 else '"' + ";".join(urls) + '"'
        if self.no_proxy:
            return f"export {self.variable}={value}\nexport no_proxy={self.no_proxy}\n"
        return f"{self.variable}={value}\n"

    def _with_credentials(self, url: str) -> str:
        if self.user is None:
            return url
        scheme, rest = url.split("://", 1)
        if self.encrypted:
            creds = f"#{self.user.lstrip('#')}:#{(self.password or '').lstrip('#')}"
        else:
            creds = f"{urllib.parse.quote(self.user, safe='')}:{urllib.parse.quote(self.password or '', safe='')}"
        return f"{scheme}://{creds}@{rest}"


def proxy_url_problem(url: str) -> str | None:
    """Why URL cannot be a proxy in the agent's proxy file, or None."""
    if "://" not in url:
        return f"proxy URL {url!r} has no scheme; write https://host:port"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        return f"proxy URL {url!r} must start with https:// (the agent's proxy file format)"
    if parts.username is not None:
        return f"proxy URL {url!r} contains credentials; set proxy_user and proxy_password_secret instead"
    try:
        port = parts.port
    except ValueError:
        return f"proxy URL {url!r} has a bad port"
    if not parts.hostname or not HOST.match(parts.hostname) or parts.path not in ("", "/"):
        return f"proxy URL {url!r} must be https://host[:port] with an IPv4 address or a DNS name"
    del port
    return None
