"""Turn inventory + playbook + secrets into a validated plan per host, before any connection.

Everything a host's scripts need is decided here; engine.py only executes it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fleetctl import agent, certs, inventory, package, render
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.playbook import Playbook
from fleetctl.secrets import Secrets
from fleetctl.sshconfig import Endpoint

ARCHES = ("arm64", "x86_64")
WORK_DIR = "/private/var/db/fleetctl"
APPLIED_FILE = f"{WORK_DIR}/qualys-agent.applied"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Package:
    path: Path
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Route:
    """One way to the pod for the reachability check: direct, or through one proxy."""

    name: str
    curl_config: str
    encrypted: bool = False  # string-util credentials: curl cannot log in, a 407 proves the proxy answers


@dataclass
class HostPlan:
    host: Host
    packages: dict[str, Package]
    options: list[str]  # Key=Value arguments for the configuration tool
    proxy_content: str | None
    ca_bundle: str | None
    routes: list[Route]
    pod_url: str
    become_secret: str | None
    known_hosts: Path
    endpoint: Endpoint
    digests: dict[str, str]  # setting -> sha256 of its value, recorded on the Mac once applied
    fingerprint: str  # of all settings together: an unchanged host needs no provisioning
    group: str
    run_as: str | None  # agent User, checked in preflight
    sudo_command: str | None  # with UseSudo=1: the program the agent runs collection commands through
    site: str | None = None  # fleetctl_site: Macs of a site share one upload over its uplink (relay.py)
    relay: str | None = None  # fleetctl_relay: the Mac of the site preferred as its relay
    lan_address: str | None = None  # fleetctl_lan_address: where the site's Macs reach this one

    def marker(self, digests: dict[str, str], fingerprint: str, paths: agent.Paths) -> str:
        """What the Mac remembers fleetctl applied: digests (never values) and the agent's paths."""
        entries = {**digests, "fingerprint": fingerprint, **paths.remember()}
        return "".join(f"{k}={v}\n" for k, v in sorted(entries.items()))

    @property
    def staged_dir(self) -> str:
        return f"/private/var/tmp/fleetctl-{self.host.user or 'user'}"

    def staged(self, pkg: Package) -> str:
        return f"{self.staged_dir}/{pkg.sha256[:16]}.pkg"

    # The privileged scripts, rendered here once for the engine and for `fleetctl plan` alike.
    def package_script(self, action: str, pkg: Package) -> str:
        """`install` (installer) or `upgrade` (qagent_upgrade.sh) of the staged package."""
        return render.render(action, work_dir=WORK_DIR, staged=self.staged(pkg), sha256=pkg.sha256,
                             app_bin=agent.APP_BIN)

    def configure_script(self, options: list[str], proxy: str | None, ca: str | None, marker: str,
                         move_hostid: tuple[str, str] | None = None) -> str:
        """PROXY None leaves the proxy file alone, "" removes fleetctl's; MOVE_HOSTID (old, new)
        carries the hostid along when HostIdSearchDir changes, so the Mac stays one asset."""
        return render.render(
            "configure", proxy_content=proxy, config_dir=agent.CONFIG_DIR, proxy_file=agent.PROXY_FILE,
            ca_bundle=ca, ca_bundle_path=agent.CA_BUNDLE, tool_paths=agent.TOOL_PATHS, options=options,
            marker_dir=WORK_DIR, marker=marker, applied_file=APPLIED_FILE, move_hostid=move_hostid)

    def uninstall_script(self, wait_s: int, hostid_file: str, remove_hostid: bool) -> str:
        return render.render(
            "uninstall", tool_paths=agent.UNINSTALL_PATHS, applied_file=APPLIED_FILE, wait_s=wait_s,
            label=agent.LABEL, app=agent.APP, plist=agent.PLIST, package_id=agent.PACKAGE_ID,
            hostid_path=hostid_file, remove_hostid=remove_hostid)


def _curl_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Planner:
    def __init__(self, playbook: Playbook, secrets: Secrets | None):
        """SECRETS None renders placeholders (for `fleetctl plan`): nothing secret is ever read."""
        self.playbook = playbook
        self.secrets = secrets
        self._packages: dict[Path, Package] = {}

    def _secret(self, name: str, purpose: str) -> str:
        if self.secrets is None:
            return f"SECRET.{name}"
        return self.secrets.get(name, purpose)

    def _fail(self, host: Host, message: str) -> UsageError:
        return UsageError(f"{host.where}: {message}")

    def _package(self, host: Host, arch: str, value: Any) -> Package:
        path = Path(os.path.expanduser(str(value)))
        if path not in self._packages:
            try:
                info = package.inspect(path)
            except UsageError as e:
                raise self._fail(host, f"agent_pkg_{arch}: {e}") from None
            if info.identifier != agent.PACKAGE_ID:
                raise self._fail(host, f"agent_pkg_{arch} {path} is {info.identifier!r}, not the Qualys agent "
                                       f"({agent.PACKAGE_ID})")
            if info.architectures and arch not in info.architectures:
                raise self._fail(host, f"agent_pkg_{arch} {path} is built for {', '.join(info.architectures)}, "
                                       f"not {arch}; point agent_pkg_{arch} at the {arch} package")
            self._packages[path] = Package(path, info.version, package.sha256(path), info.size)
        return self._packages[path]

    def host(self, host: Host) -> HostPlan:
        v = {**host.vars}
        action = self.playbook.action
        for key in v:
            if key.startswith("agent_pkg_") and key.removeprefix("agent_pkg_") not in ARCHES:
                raise self._fail(host, f"{key}: unknown architecture {key.removeprefix('agent_pkg_')!r}; "
                                       "use agent_pkg_arm64 or agent_pkg_x86_64")
        packages: dict[str, Package] = {}
        if action in ("install", "upgrade"):
            packages = {arch: self._package(host, arch, v[f"agent_pkg_{arch}"]) for arch in ARCHES
                        if v.get(f"agent_pkg_{arch}")}
            if not packages:
                raise self._fail(host, "no package: set agent_pkg_arm64 and/or agent_pkg_x86_64 to .pkg files")
        provisions = action == "install" or (action == "configure" and self.playbook.subscription)
        server_uri = v.get("server_uri")
        if provisions and not server_uri:
            raise self._fail(host, "server_uri is not set; set it to https://<your Qualys platform>/CloudAgent")
        if server_uri and agent.option_problem("ServerUri", server_uri):
            raise self._fail(host, f"server_uri: {agent.option_problem('ServerUri', server_uri)}")
        options: dict[str, str] = {}
        if provisions:
            options = {"ActivationId": self._secret("activation_id", "Qualys ActivationId"),
                       "CustomerId": self._secret("customer_id", "Qualys CustomerId"), "ServerUri": str(server_uri)}
            if self.secrets is not None:
                for key in agent.SECRET_OPTIONS:
                    if agent.option_problem(key, options[key]):
                        raise UsageError(f"secret {key.replace('Id', '_id').lower()}: {key} must be a UUID "
                                         "(the value is not shown)")
        if action in ("install", "configure"):
            options.update(self.playbook.options)
        proxy, routes = self.proxy(host, v)
        ca_bundle = self._ca_bundle(host, v.get("proxy_ca_bundle"))
        pod_ca = v.get("fleetctl_pod_ca")
        if pod_ca:
            routes = [replace(r, curl_config=r.curl_config + f"cacert = {_curl_quote(str(pod_ca))}\n") for r in routes]
        settings = dict(options)
        if action in ("install", "configure"):
            settings["proxy"] = proxy.file_content() if proxy else ""
        if action == "install" or ca_bundle:
            settings["ca_bundle"] = ca_bundle or ""
        become = v.get("fleetctl_become_secret")
        site, relay, lan_address = self._site(host, v)
        return HostPlan(
            host=host, packages=packages, options=[f"{k}={val}" for k, val in options.items()],
            proxy_content=proxy.file_content() if proxy else None, ca_bundle=ca_bundle, routes=routes,
            pod_url=str(server_uri or ""), become_secret=str(become) if become else None, known_hosts=host.known_hosts,
            endpoint=inventory.endpoint(host),
            digests={k: hashlib.sha256(val.encode()).hexdigest()[:32] for k, val in settings.items()},
            fingerprint=hashlib.sha256(json.dumps(sorted(settings.items())).encode()).hexdigest(),
            group=options.get("Group", "wheel"), run_as=options.get("User"),
            sudo_command=options.get("SudoCommand", "sudo") if options.get("UseSudo") == "1" else None,
            site=site, relay=relay, lan_address=lan_address,
        )

    def _site(self, host: Host, v: dict) -> tuple[str | None, str | None, str | None]:
        """fleetctl_site, fleetctl_relay and fleetctl_lan_address, checked before any Mac is touched."""
        site, relay, address = v.get("fleetctl_site"), v.get("fleetctl_relay"), v.get("fleetctl_lan_address")
        if site is not None and not SITE_NAME.match(str(site)):
            raise self._fail(host, f"fleetctl_site {site!r}: use letters, digits, '.', '_' or '-', e.g. berlin")
        if relay is not None and not SITE_NAME.match(str(relay)):
            raise self._fail(host, f"fleetctl_relay {relay!r}: name the relay Mac as the inventory does, e.g. mac-012")
        if address is not None:
            try:
                address = str(ipaddress.ip_address(str(address)))
            except ValueError:
                raise self._fail(host, f"fleetctl_lan_address {address!r}: give the Mac's IP address on its "
                                       "site's network, e.g. 10.1.2.3") from None
        return (str(site) if site is not None else None, str(relay) if relay is not None else None, address)

    def _ca_bundle(self, host: Host, value: Any) -> str | None:
        """proxy_ca_bundle: one PEM file or a list of them, combined into the agent's one bundle."""
        if not value:
            return None
        paths = value if isinstance(value, list) else [value]
        return certs.bundle([str(p) for p in paths], host.where)

    def proxy(self, host: Host, v: dict) -> tuple[agent.Proxy | None, list[Route]]:
        """The proxy file's content and the routes preflight tries, from the proxy_* variables
        (also used by the MDM exports, with a stand-in host for error messages)."""
        urls = v.get("proxy_urls")
        if not urls:
            return None, [Route("direct", "")]
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not 1 <= len(urls) <= agent.MAX_PROXIES:
            raise self._fail(host, f"proxy_urls must list 1 to {agent.MAX_PROXIES} proxies (the agent's limit)")
        variable = v.get("proxy_variable", "qualys_https_proxy")
        if variable not in ("qualys_https_proxy", "https_proxy"):
            raise self._fail(host, "proxy_variable must be qualys_https_proxy (preferred) or https_proxy")
        no_proxy = v.get("no_proxy")
        if no_proxy is not None and not agent.HOST.match(str(no_proxy).lstrip(".")):
            raise self._fail(host, "no_proxy must be the pod's domain, e.g. qualys.com")
        servers = tuple(self._proxy_server(host, v, entry) for entry in urls)
        proxy = agent.Proxy(servers, str(variable), None if no_proxy is None else str(no_proxy))
        if no_proxy and self._bypassed(v.get("server_uri", ""), str(no_proxy)):
            return proxy, [Route("direct", "")]
        return proxy, [self._route(s) for s in servers]

    def _proxy_server(self, host: Host, v: dict, entry: Any) -> agent.ProxyServer:
        """A proxy_urls entry: a URL (with the shared proxy_user / proxy_password_secret, if set)
        or a mapping {url, user, password_secret} with credentials of its own."""
        if isinstance(entry, dict):
            unknown = set(entry) - {"url", "user", "password_secret"}
            if unknown or "url" not in entry:
                raise self._fail(host, "a proxy_urls entry is a URL or a mapping with url: and optionally user: "
                                       f"and password_secret:{' (not ' + ', '.join(sorted(unknown)) + ')' if unknown else ''}")
            url, user, secret = entry["url"], entry.get("user"), entry.get("password_secret")
        else:
            url, user, secret = entry, v.get("proxy_user"), v.get("proxy_password_secret")
        problem = agent.proxy_url_problem(str(url))
        if problem:
            raise self._fail(host, problem)
        password = None
        if user is not None:
            if not secret:
                raise self._fail(host, f"proxy {url}: a user is set but no password_secret (proxy_password_secret) "
                                       "names the secret holding its password")
            password = self._secret(str(secret), f"password of proxy user {user}")
        return agent.ProxyServer(str(url).rstrip("/"), None if user is None else str(user), password)

    @staticmethod
    def _route(server: agent.ProxyServer) -> Route:
        """How preflight's curl reaches the pod through SERVER: the port the agent dials, the
        credentials percent-encoded in the proxy URL (curl decodes them), none if encrypted."""
        creds = ""
        if server.user is not None and not server.encrypted:
            creds = f"{urllib.parse.quote(server.user, safe='')}:{urllib.parse.quote(server.password or '', safe='')}@"
        config = f"proxy = {_curl_quote('http://' + creds + server.address)}\n"
        return Route(server.address, config, server.encrypted)

    @staticmethod
    def _bypassed(server_uri: str, domain: str) -> bool:
        from urllib.parse import urlsplit

        host = urlsplit(server_uri).hostname or ""
        domain = domain.lstrip(".")
        return host == domain or host.endswith("." + domain)
