"""The agent's proxy file, as strictly as the guide defines it, and its credentials.

Either one line `qualys_https_proxy=<value>` (or `https_proxy=<value>`), or the bypass form
`export qualys_https_proxy=<value>` + `export no_proxy=<domains>`; the value is one URL or up
to 5 inside double quotes, separated by ';'. A user or password is percent-encoded, and may be
string-util output after a '#' (decrypted with stringutil.py, shipped beside this module).
Anything else is a ProxyConfigError: the agent then does not contact the platform at all.
"""
import os
import re
import stat
import urllib.parse

import stringutil
from agentcommon import PROXY_FILE

MAX_PROXIES = 5
CRED_TEXT = r"(?:[A-Za-z0-9\-._~!&'()*+,=]|%[0-9A-Fa-f]{2})+"  # ':' '@' '$' ';' must be percent-encoded
CREDENTIAL = rf"(?:#[A-Za-z0-9_-]+|{CRED_TEXT})"  # '#...': encrypted with string-util
PROXY_URL = re.compile(rf"https://(?:(?P<user>{CREDENTIAL}):(?P<password>{CREDENTIAL})@)?"
                       r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FQDN = re.compile(rf"(?=.{{1,253}}$){LABEL}(?:\.{LABEL})*\.(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9-]+")
IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
DOMAIN = re.compile(rf"\.?{LABEL}(?:\.{LABEL})*")


class ProxyConfigError(Exception):
    """The proxy file breaks the guide's rules: the agent does not contact the platform at all."""


def credential(text: str) -> str:
    """A user or password as written in the proxy file: percent-encoded, and maybe encrypted
    with string-util ('#<its output>'): decrypted first, then percent-decoded like any other."""
    if text.startswith("#"):
        try:
            text = stringutil.decode(text[1:])
        except ValueError:
            raise ProxyConfigError("a credential starting with '#' is not string-util output") from None
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ProxyConfigError("a percent-encoded credential is not UTF-8") from None


def parse_proxy_url(text: str, n: int) -> dict:
    """One proxy: https://[user:password@]host[:port], host an IPv4 address or an FQDN."""
    m = PROXY_URL.fullmatch(text)
    if not m:
        raise ProxyConfigError(f"proxy {n} is not https://[user:password@]host[:port] "
                               "(special characters in credentials must be percent-encoded)")
    host, port = m["host"], int(m["port"] or 443)
    if not (IPV4.fullmatch(host) or FQDN.fullmatch(host)):
        raise ProxyConfigError(f"proxy {n}: host {host!r} is neither an IPv4 address nor a fully qualified name")
    if not 1 <= port <= 65535:
        raise ProxyConfigError(f"proxy {n}: port {port} is out of range")
    user = credential(m["user"]) if m["user"] else None
    password = credential(m["password"]) if m["password"] else None
    return {"host": host, "port": port, "user": user, "password": password}


def parse_proxy_value(value: str) -> list:
    """One URL, or 1-5 URLs separated by ';' inside double quotes."""
    if '"' in value:
        if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:
            raise ProxyConfigError("the value has stray double quotes")
        urls = value[1:-1].split(";")
    elif ";" in value:
        raise ProxyConfigError("several proxies must be written inside double quotes")
    else:
        urls = [value]
    if len(urls) > MAX_PROXIES:
        raise ProxyConfigError(f"{len(urls)} proxies listed; at most {MAX_PROXIES} are allowed")
    return [parse_proxy_url(url, n) for n, url in enumerate(urls, start=1)]


def parse_proxy_file(text: str):
    """Return (proxies, no_proxy domains), or raise ProxyConfigError with the reason.

    Either exactly one line `qualys_https_proxy=<value>` or `https_proxy=<value>`, or the
    bypass form: `export qualys_https_proxy=<value>` and `export no_proxy=<domains>`.
    """
    lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    if lines == [""]:
        raise ProxyConfigError("the file is empty")
    if len(lines) == 1 and not lines[0].startswith("export "):
        key, sep, value = lines[0].partition("=")
        if not sep or key not in ("qualys_https_proxy", "https_proxy"):
            raise ProxyConfigError("expected one line qualys_https_proxy=<url> or https_proxy=<url>")
        return parse_proxy_value(value), []
    blank = next((n for n, line in enumerate(lines, start=1) if not line.strip()), None)
    if blank:
        raise ProxyConfigError(f"line {blank} is blank")
    found = {}
    for n, line in enumerate(lines, start=1):
        key, sep, value = line.partition("=")
        if not sep or key not in ("export qualys_https_proxy", "export no_proxy") or key in found:
            raise ProxyConfigError(f"line {n}: expected one line qualys_https_proxy=<url>, or the two lines "
                                   "export qualys_https_proxy=<url> and export no_proxy=<domain>")
        found[key] = value
    if len(found) != 2:
        raise ProxyConfigError("the bypass form needs both export qualys_https_proxy= and export no_proxy= lines")
    domains = found["export no_proxy"].split(",")
    if not all(DOMAIN.fullmatch(d) for d in domains):
        raise ProxyConfigError("no_proxy must be a domain name such as qualys.com")
    return parse_proxy_value(found["export qualys_https_proxy"]), domains


def load_proxy_file(path: str = PROXY_FILE):
    """(proxies, no_proxy) from PATH; ([], []) when there is no file. Owner root, mode 660 only."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [], []
    if not stat.S_ISREG(st.st_mode):
        raise ProxyConfigError("the proxy file is not a regular file")
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) != 0o660:
        raise ProxyConfigError(f"the proxy file must be owned by root with mode 660 "
                               f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ProxyConfigError(f"the proxy file cannot be read: {e}") from None
    return parse_proxy_file(text)


def bypass(host: str, no_proxy: list) -> bool:
    return any(host == d.lstrip(".") or host.endswith("." + d.lstrip(".")) for d in no_proxy)
