"""Turn inventory + playbook + secrets into a validated plan per host, before any connection.

Everything a host's scripts need is decided here; engine.py only executes it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetctl import agent, package, render, sshconfig
from fleetctl.errors import UsageError
from fleetctl.inventory import Host
from fleetctl.playbook import Playbook
from fleetctl.secrets import Secrets
from fleetctl.sshconfig import Endpoint

ARCHES = ("arm64", "x86_64")
WORK_DIR = "/private/var/db/fleetctl"
APPLIED_FILE = f"{WORK_DIR}/qualys-agent.applied"


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
    log_file: str
    check_in_logged: bool  # False when LogLevel/LogDestType hide check-ins from the log file
    hostid_path: str
    group: str

    def marker(self, digests: dict[str, str], fingerprint: str) -> str:
        """What the Mac remembers fleetctl applied (digests only, never values)."""
        return "".join(f"{k}={v}\n" for k, v in sorted({**digests, "fingerprint": fingerprint}.items()))

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

    def configure_script(self, options: list[str], proxy: str | None, ca: str | None, marker: str) -> str:
        return render.render(
            "configure", proxy_content=proxy, config_dir=agent.CONFIG_DIR, proxy_file=agent.PROXY_FILE,
            ca_bundle=ca, ca_bundle_path=agent.CA_BUNDLE, tool_paths=agent.TOOL_PATHS, options=options,
            marker_dir=WORK_DIR, marker=marker, applied_file=APPLIED_FILE)

    def uninstall_script(self, wait_s: int) -> str:
        return render.render(
            "uninstall", tool_paths=agent.UNINSTALL_PATHS, applied_file=APPLIED_FILE, wait_s=wait_s,
            label=agent.LABEL, app=agent.APP, plist=agent.PLIST, package_id=agent.PACKAGE_ID,
            hostid_path=self.hostid_path)


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
        ca_bundle = None
        if v.get("proxy_ca_bundle"):
            try:
                ca_bundle = Path(os.path.expanduser(str(v["proxy_ca_bundle"]))).read_text()
            except OSError as e:
                raise self._fail(host, f"proxy_ca_bundle: {e.strerror}: {v['proxy_ca_bundle']}") from None
            if "-----BEGIN CERTIFICATE-----" not in ca_bundle:
                raise self._fail(host, "proxy_ca_bundle must be PEM certificates")
        pod_ca = v.get("fleetctl_pod_ca")
        if pod_ca:
            routes = [Route(r.name, r.curl_config + f"cacert = {_curl_quote(str(pod_ca))}\n") for r in routes]
        settings = dict(options)
        if action == "install" or proxy:
            settings["proxy"] = proxy.file_content() if proxy else ""
        if action == "install" or ca_bundle:
            settings["ca_bundle"] = ca_bundle or ""
        level = int(options.get("LogLevel", 3))
        log_dir = options.get("LogFileDir", "/var/log/qualys/")
        become = v.get("fleetctl_become_secret")
        return HostPlan(
            host=host, packages=packages, options=[f"{k}={val}" for k, val in options.items()],
            proxy_content=proxy.file_content() if proxy else None, ca_bundle=ca_bundle, routes=routes,
            pod_url=str(server_uri or ""), become_secret=str(become) if become else None, known_hosts=host.known_hosts,
            endpoint=sshconfig.endpoint(host),
            digests={k: hashlib.sha256(val.encode()).hexdigest()[:32] for k, val in settings.items()},
            fingerprint=hashlib.sha256(json.dumps(sorted(settings.items())).encode()).hexdigest(),
            log_file=os.path.join(log_dir, "qualys-cloud-agent.log"),
            check_in_logged=level >= 3 and options.get("LogDestType", "file") == "file",
            hostid_path=agent.hostid_path(options.get("HostIdSearchDir", str(v.get("agent_hostid_dir", "/etc/")))),
            group=options.get("Group", "wheel"),
        )

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
        for url in urls:
            problem = agent.proxy_url_problem(str(url))
            if problem:
                raise self._fail(host, problem)
        variable = v.get("proxy_variable", "qualys_https_proxy")
        if variable not in ("qualys_https_proxy", "https_proxy"):
            raise self._fail(host, "proxy_variable must be qualys_https_proxy (preferred) or https_proxy")
        user = v.get("proxy_user")
        password = None
        if user is not None:
            secret = v.get("proxy_password_secret")
            if not secret:
                raise self._fail(host, "proxy_user is set but proxy_password_secret (a secret name) is not")
            password = self._secret(str(secret), f"password of proxy user {user}")
        no_proxy = v.get("no_proxy")
        if no_proxy is not None and not agent.HOST.match(str(no_proxy).lstrip(".")):
            raise self._fail(host, "no_proxy must be the pod's domain, e.g. qualys.com")
        proxy = agent.Proxy(tuple(str(u).rstrip("/") for u in urls), str(variable), None if user is None else str(user),
                            password, bool(v.get("proxy_encrypted", False)), None if no_proxy is None else str(no_proxy))
        routes = []
        for url in proxy.urls:
            netloc = url.split("://", 1)[1]
            config = f"proxy = {_curl_quote('http://' + netloc)}\n"
            if user is not None and not proxy.encrypted:
                config += f"proxy-user = {_curl_quote(str(user) + ':' + str(password))}\n"
            routes.append(Route(netloc, config))
        if no_proxy and self._bypassed(v.get("server_uri", ""), str(no_proxy)):
            routes = [Route("direct", "")]
        return proxy, routes

    @staticmethod
    def _bypassed(server_uri: str, domain: str) -> bool:
        from urllib.parse import urlsplit

        host = urlsplit(server_uri).hostname or ""
        domain = domain.lstrip(".")
        return host == domain or host.endswith("." + domain)
