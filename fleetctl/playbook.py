"""A playbook: the action, the agent's options and default variables, validated with line numbers."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetctl import agent, waves as wavespec, yamlfile
from fleetctl.errors import UsageError

ACTIONS = ("install", "upgrade", "uninstall", "configure", "scan", "status")
KEYS = {"name", "action", "agent", "vars", "verify_timeout", "subscription", "scan", "waves", "max_fail",
        "failure_budget", "health_gate", "checkin_pattern", "scan_done_pattern", "remove_hostid", "step_timeout",
        "until", "retry_every", "next_wave_after", "wake_wait", "platform_uninstall"}
NEXT_WAVE = ("reached", "converged")
SCAN_TYPES = ("vm", "pc", "inv", "udc", "sca", "vmpc")


@dataclass
class Playbook:
    path: Path
    action: str
    name: str
    options: dict[str, str]  # configuration-tool options other than the secrets and ServerUri
    vars: dict[str, Any] = field(default_factory=dict)
    verify_timeout: int = 60
    subscription: bool = False  # configure: also apply server_uri + ActivationId/CustomerId (migration)
    scan_type: str = "vm"
    scan_cputhrottle: int = 0
    scan_timeout: int = 300
    waves: list[wavespec.Wave] = field(default_factory=list)
    max_fail: wavespec.Limit | None = None  # per wave; None: never halt
    failure_budget: wavespec.Limit | None = None
    health_gate: bool = True  # after each wave's soak, check the wave's Macs are healthy
    # The guide quotes no log line for "checked in" or "scan done": waiting for text is the admin's choice.
    checkin_pattern: re.Pattern | None = None
    scan_done_pattern: str | None = None  # a regex; {control_id} stands for the scan's ControlId
    remove_hostid: bool = False  # uninstall: the guide does not say the hostid (Agentless Tracking) goes
    step_timeout: int = 900  # seconds one step on a Mac may take before it fails (a hung or endless tool)
    # A campaign (until: set) converges over days: see campaign.py. --until/--retry-every override these.
    until: datetime | None = None
    retry_every: int | None = None
    next_wave_after: str = "reached"  # or "converged": a campaign's wave waits for its pending Macs
    wake_wait: int = 60  # seconds between a Wake-on-LAN packet and trying the Mac again
    # uninstall: also uninstall each agent on the Qualys platform (frees its licence; platform.py)
    platform_uninstall: bool = False

    @property
    def log_level_warning(self) -> str | None:
        if self.options.get("LogLevel") in ("4", "5"):
            return (f"warning: {self.path}: LogLevel {self.options['LogLevel']} may write secrets in clear text "
                    "to the agent's log (the vendor guide); lower it once you are done troubleshooting")
        return None


def load(path: Path) -> Playbook:
    data = yamlfile.load(path, "playbook")
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: a playbook is a mapping with action:, agent: and vars:")
    for key in data:
        if key not in KEYS:
            raise UsageError(f"{path}:{data.line_of(key)}: unknown key {key!r}; use {', '.join(sorted(KEYS))}")
    action = data.get("action")
    if action not in ACTIONS:
        raise UsageError(f"{path}:{data.line_of('action')}: action must be one of {', '.join(ACTIONS)}, "
                         f"not {action!r}")
    options = data.get("agent") or yamlfile.Mapping()
    if not isinstance(options, dict):
        raise UsageError(f"{path}:{data.line_of('agent')}: agent: must map option names to values")
    clean: dict[str, str] = {}
    for key, value in options.items():
        line = options.line_of(key) if isinstance(options, yamlfile.Mapping) else 0
        if key in agent.SECRET_OPTIONS:
            raise UsageError(f"{path}:{line}: {key} is a secret; store it with `fleetctl secrets set "
                             f"{key.replace('Id', '_id').lower()}` instead of writing it in a playbook")
        if key == "ServerUri":
            raise UsageError(f"{path}:{line}: set the platform with the server_uri variable, not agent: ServerUri")
        problem = agent.option_problem(key, value)
        if problem:
            raise UsageError(f"{path}:{line}: {problem}")
        clean[key] = str(value).lower() if isinstance(value, bool) else str(value)
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        raise UsageError(f"{path}:{data.line_of('vars')}: vars: must map names to values")
    timeout = data.get("verify_timeout", 60)
    if not isinstance(timeout, int) or not 5 <= timeout <= 3600:
        raise UsageError(f"{path}:{data.line_of('verify_timeout')}: verify_timeout must be 5 to 3600 seconds")
    subscription = data.get("subscription", False)
    if not isinstance(subscription, bool):
        raise UsageError(f"{path}:{data.line_of('subscription')}: subscription must be true or false")
    scan = data.get("scan") or {}
    if not isinstance(scan, dict) or set(scan) - {"type", "cputhrottle", "timeout"}:
        raise UsageError(f"{path}:{data.line_of('scan')}: scan: takes type, cputhrottle and timeout")
    scan_type = scan.get("type", "vm")
    if scan_type not in SCAN_TYPES:
        raise UsageError(f"{path}:{scan.line_of('type')}: scan type must be one of {', '.join(SCAN_TYPES)}")
    throttle = scan.get("cputhrottle", 0)
    if not isinstance(throttle, int) or not 0 <= throttle <= 1000:
        raise UsageError(f"{path}:{scan.line_of('cputhrottle')}: cputhrottle must be 0 (no throttling) to 1000")
    scan_timeout = scan.get("timeout", 300)
    if not isinstance(scan_timeout, int) or not 5 <= scan_timeout <= 86400:
        raise UsageError(f"{path}:{scan.line_of('timeout')}: scan timeout must be 5 to 86400 seconds")
    waves, max_fail, budget = wavespec.parse(path, data)
    gate = data.get("health_gate", True)
    if not isinstance(gate, bool):
        raise UsageError(f"{path}:{data.line_of('health_gate')}: health_gate must be true or false")
    remove_hostid = data.get("remove_hostid", False)
    if not isinstance(remove_hostid, bool):
        raise UsageError(f"{path}:{data.line_of('remove_hostid')}: remove_hostid must be true or false")
    platform_uninstall = data.get("platform_uninstall", False)
    if not isinstance(platform_uninstall, bool):
        raise UsageError(f"{path}:{data.line_of('platform_uninstall')}: platform_uninstall must be true or false")
    if platform_uninstall and action != "uninstall":
        raise UsageError(f"{path}:{data.line_of('platform_uninstall')}: platform_uninstall belongs to an uninstall "
                         f"playbook (action: uninstall), not action: {action}")
    step_timeout = 900
    if "step_timeout" in data:
        where = f"{path}:{data.line_of('step_timeout')}"
        step_timeout = wavespec.parse_duration(data["step_timeout"], where, "step_timeout")
        if not 10 <= step_timeout <= 86400:
            raise UsageError(f"{where}: step_timeout must be 10s to 24h")
    return Playbook(path, action, str(data.get("name") or action), clean, dict(variables), timeout,
                    subscription, scan_type, throttle, scan_timeout, waves, max_fail, budget, gate,
                    _pattern(path, data, "checkin_pattern"), _scan_done(path, data), remove_hostid, step_timeout,
                    platform_uninstall=platform_uninstall, **_campaign(path, data))


def _campaign(path: Path, data) -> dict[str, Any]:
    """until:, retry_every:, next_wave_after:, wake_wait: (whether until: has passed is checked at run time)."""
    out: dict[str, Any] = {}
    if data.get("until") is not None:
        out["until"] = wavespec.parse_time(data["until"], f"{path}:{data.line_of('until')}", "until")
    if data.get("retry_every") is not None:
        where = f"{path}:{data.line_of('retry_every')}"
        out["retry_every"] = wavespec.parse_duration(data["retry_every"], where, "retry_every")
        if "until" not in out:
            raise UsageError(f"{where}: retry_every needs a deadline; add until: '2026-12-20 18:00'")
        if not 10 <= out["retry_every"] <= 7 * 86400:
            raise UsageError(f"{where}: retry_every must be 10s to 7d")
    if "next_wave_after" in data:
        if data["next_wave_after"] not in NEXT_WAVE:
            raise UsageError(f"{path}:{data.line_of('next_wave_after')}: next_wave_after is 'reached' (the next wave "
                             "starts once this wave's reachable Macs are done) or 'converged' (once all of them are)")
        out["next_wave_after"] = data["next_wave_after"]
    if "wake_wait" in data:
        where = f"{path}:{data.line_of('wake_wait')}"
        out["wake_wait"] = wavespec.parse_duration(data["wake_wait"], where, "wake_wait")
        if not 1 <= out["wake_wait"] <= 900:
            raise UsageError(f"{where}: wake_wait must be 1s to 15m")
    return out


def _pattern(path: Path, data, key: str, text: str | None = None) -> re.Pattern | None:
    value = data.get(key)
    if value is None:
        return None
    where = f"{path}:{data.line_of(key)}"
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key} must be a regular expression, e.g. 'Heartbeat acknowledged'")
    try:
        return re.compile(text if text is not None else value)
    except re.error as e:
        raise UsageError(f"{where}: {key} is not a valid regular expression: {e}") from None


def _scan_done(path: Path, data) -> str | None:
    """Checked with a stand-in ControlId so a bad pattern is refused before any Mac is touched."""
    value = data.get("scan_done_pattern")
    if value is not None:
        stand_in = value.replace("{control_id}", re.escape("20200427151136.0")) if isinstance(value, str) else None
        _pattern(path, data, "scan_done_pattern", stand_in)
    return value
