"""The lab pod's API settings (DIR/api.json) and its rate and concurrency limits.

DIR/api.json, written by `lab up` and read again on every API request (tests rewrite it while
the lab runs):
  user, password          the API user (HTTP Basic); the password also in LABDIR/api-password (0600)
  customer_id             that user's subscription: only its agents' records are visible
  modules                 the subscription's activated Cloud Agent modules, e.g. ["AGENT_VM", "AGENT_PC"]
  rate_limit              {"calls": N, "window_s": S}: N calls per sliding window of S seconds
  concurrency_limit       calls that may run at once
  response_delay_s        seconds each API call takes (default 0; lets a test hold calls open)

Limits and their headers: "HTTP response headers" (qwebhelp api_doc get_started/http_headers.htm)
and COMMUNITY-2681 (docs/qualys-platform-api.md, f): every answer carries X-RateLimit-Limit,
-Window-Sec, -Remaining, -ToWait-Sec and X-Concurrency-Limit-Limit, -Running; a blocked call gets
HTTP 409 and waits X-RateLimit-ToWait-Sec seconds. Whether QPS REST 2.0 enforces them is not
settled (J1's recordings show none there); the lab enforces them, as the harsher case.
The defaults are the values J1 recorded for the VM API: 300 calls per 3600 s, 2 at once.
"""
from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# The customer id the lab's tests, demo and benchmarks provision Macs with (FLEETCTL_CUSTOMER_ID).
LAB_CUSTOMER_ID = "8c1f0a55-2e3b-4b7c-a1d9-6f7e8d9c0b22"
API_USER = "flab_api1"
DEFAULTS = {"customer_id": LAB_CUSTOMER_ID, "modules": ["AGENT_VM", "AGENT_PC"],
            "rate_limit": {"calls": 300, "window_s": 3600}, "concurrency_limit": 2, "response_delay_s": 0}


@dataclass
class ApiConfig:
    user: str
    password: str
    customer_id: str
    modules: list[str]
    rate_calls: int
    rate_window_s: float
    concurrency: int
    delay_s: float


def write_config(lab_dir: Path) -> Path:
    """DIR/pod/api.json with the defaults and the API user; the password (kept from an earlier
    lab in DIR) also in DIR/api-password, 0600, as DIR/sudo-password."""
    secret = lab_dir / "api-password"
    if not secret.exists():
        secret.write_text(f"Api:{secrets.token_urlsafe(12)}%&\n")
    secret.chmod(0o600)
    path = lab_dir / "pod" / "api.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"user": API_USER, "password": secret.read_text().strip(), **DEFAULTS}, indent=1))
    path.chmod(0o600)
    return path


def read_config(pod_dir: Path) -> ApiConfig:
    """DIR/api.json as it is now; missing keys take the defaults. No file: no API user at all."""
    try:
        raw = json.loads((pod_dir / "api.json").read_text())
    except (OSError, ValueError):
        raw = {}
    merged = {**DEFAULTS, **raw}
    rate = {**DEFAULTS["rate_limit"], **(merged.get("rate_limit") or {})}
    return ApiConfig(str(merged.get("user") or ""), str(merged.get("password") or ""), str(merged["customer_id"]),
                     [str(m) for m in merged["modules"]], max(int(rate["calls"]), 0),
                     max(float(rate["window_s"]), 0.001), max(int(merged["concurrency_limit"]), 1),
                     max(float(merged.get("response_delay_s") or 0), 0.0))


@dataclass
class Admission:
    """What the limits said about one call: admitted or not, and the headers for its answer."""

    code: int  # 0: admitted; 1960: concurrency limit; 1965: rate limit (VM API Appendix D codes)
    headers: dict[str, str] = field(default_factory=dict)


class Limits:
    """A sliding window of admitted calls and a count of running ones (one API user)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.calls: deque[float] = deque()
        self.running = 0
        self.lock = threading.Lock()

    def _headers(self, config: ApiConfig, remaining: int, wait_s: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(config.rate_calls), "X-RateLimit-Window-Sec": f"{config.rate_window_s:g}",
                "X-RateLimit-Remaining": str(max(remaining, 0)), "X-RateLimit-ToWait-Sec": str(wait_s),
                "X-Concurrency-Limit-Limit": str(config.concurrency),
                "X-Concurrency-Limit-Running": str(self.running)}

    def _expire(self, now: float, window: float) -> None:
        while self.calls and self.calls[0] <= now - window:
            self.calls.popleft()

    def peek(self, config: ApiConfig) -> dict[str, str]:
        """The headers for an answer that is no call (bad credentials): nothing counted."""
        with self.lock:
            self._expire(self.clock(), config.rate_window_s)
            return self._headers(config, config.rate_calls - len(self.calls), 0)

    def admit(self, config: ApiConfig) -> Admission:
        """Count the call in, or say why not; an admitted call must be ended with done().
        The concurrency limit is checked first: it takes precedence (VM API "API limits")."""
        with self.lock:
            now = self.clock()
            self._expire(now, config.rate_window_s)
            if self.running >= config.concurrency:
                # ToWait-Sec speaks of the rate window only, which has room: 0 (code 1960 says why)
                return Admission(1960, self._headers(config, config.rate_calls - len(self.calls), 0))
            if len(self.calls) >= config.rate_calls:
                # the oldest calls leave the window first: wait until enough of them have left
                frees = self.calls[len(self.calls) - config.rate_calls] if config.rate_calls else now
                wait = max(math.ceil(frees + config.rate_window_s - now), 1)
                return Admission(1965, self._headers(config, 0, wait))
            self.calls.append(now)
            self.running += 1
            return Admission(0, self._headers(config, config.rate_calls - len(self.calls), 0))

    def done(self) -> None:
        with self.lock:
            self.running -= 1
