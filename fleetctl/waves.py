"""Waves: a canary first, then batches by count, percentage or group, each with an optional
start time, a soak and a failure threshold; plus a failure budget for the whole run."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any

from fleetctl.errors import UsageError

WAVE_KEYS = {"name", "hosts", "group", "soak", "not_before", "window", "max_fail"}


@dataclass(frozen=True)
class Limit:
    """A count ('2') or a share ('10%') of something."""

    count: int | None = None
    percent: float | None = None

    def of(self, total: int) -> int:
        if self.count is not None:
            return self.count
        return math.floor(total * (self.percent or 0) / 100)


@dataclass(frozen=True)
class Wave:
    name: str
    size: Limit | None  # None with group=None: all the remaining hosts
    group: str | None
    soak_s: int
    not_before: datetime | None
    max_fail: Limit | None  # None: no limit
    window: tuple[time, time] | None = None  # daily maintenance window, controller local time

    def closed(self, now: datetime) -> str | None:
        """Why the wave may not start (or go on) at NOW, or None."""
        if self.not_before and now < self.not_before:
            return f"may not start before {self.not_before:%Y-%m-%d %H:%M}"
        if self.window:
            start, end = self.window
            t = now.time()
            inside = start <= t < end if start <= end else (t >= start or t < end)
            if not inside:
                return f"runs only between {start:%H:%M} and {end:%H:%M}"
        return None


def parse_limit(value: Any, where: str, what: str) -> Limit:
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return Limit(count=int(text))
    if re.fullmatch(r"\d+(\.\d+)?%", text) and 0 < float(text[:-1]) <= 100:
        return Limit(percent=float(text[:-1]))
    raise UsageError(f"{where}: {what} must be a count (3) or a percentage (10%), not {value!r}")


def parse_duration(value: Any, where: str, what: str = "soak") -> int:
    match = re.fullmatch(r"(\d+)\s*([smhd]?)", str(value).strip())
    if not match:
        raise UsageError(f"{where}: {what} must be seconds (600) or 10m / 2h / 1d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_time(value: Any, where: str, what: str = "not_before") -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            return datetime.strptime(str(value).strip(), fmt)
        except ValueError:
            pass
    raise UsageError(f"{where}: {what} must be a local time like '2026-12-01 22:00'")


def counts_as_failure(status: str) -> bool:
    """What max_fail and failure_budget count: a Mac that failed. One that was not reached says
    nothing about the rollout (asleep, away, off the network) and never halts a wave."""
    return status == "failed"


def parse_window(value: Any, where: str) -> tuple[time, time]:
    match = re.fullmatch(r"(\d\d?):(\d\d)\s*-\s*(\d\d?):(\d\d)", str(value).strip())
    if not match or int(match[1]) > 23 or int(match[3]) > 23 or int(match[2]) > 59 or int(match[4]) > 59:
        raise UsageError(f"{where}: window must be a daily time range like '22:00-06:00'")
    return time(int(match[1]), int(match[2])), time(int(match[3]), int(match[4]))


def parse(path: Path, data: dict) -> tuple[list[Wave], Limit | None, Limit | None]:
    """WAVES, the default per-wave MAX_FAIL, and the run's FAILURE_BUDGET from a playbook mapping."""
    max_fail = None
    if "max_fail" in data:
        max_fail = parse_limit(data["max_fail"], f"{path}:{data.line_of('max_fail')}", "max_fail")
    budget = None
    if "failure_budget" in data:
        budget = parse_limit(data["failure_budget"], f"{path}:{data.line_of('failure_budget')}", "failure_budget")
    raw = data.get("waves") or []
    if not isinstance(raw, list):
        raise UsageError(f"{path}:{data.line_of('waves')}: waves: is a list of waves (hosts: N or N%, or group:)")
    waves = []
    for n, item in enumerate(raw, start=1):
        line = getattr(item, "line", data.line_of("waves"))
        where = f"{path}:{line}"
        if not isinstance(item, dict) or set(item) - WAVE_KEYS:
            raise UsageError(f"{where}: a wave takes {', '.join(sorted(WAVE_KEYS))}")
        if ("hosts" in item) == ("group" in item):
            raise UsageError(f"{where}: give a wave either hosts: (count, % or 'rest') or group:")
        size = None
        if "hosts" in item and str(item["hosts"]) != "rest":
            size = parse_limit(item["hosts"], where, "hosts")
        waves.append(Wave(
            name=str(item.get("name") or ("canary" if n == 1 else f"wave {n}")),
            size=size, group=str(item["group"]) if "group" in item else None,
            soak_s=parse_duration(item.get("soak", 0), where),
            not_before=parse_time(item["not_before"], where) if item.get("not_before") else None,
            max_fail=parse_limit(item["max_fail"], where, "max_fail") if "max_fail" in item else max_fail,
            window=parse_window(item["window"], where) if item.get("window") else None,
        ))
    return waves, max_fail, budget


def assign(names: list[str], groups: dict[str, set[str]], waves: list[Wave],
           max_fail: Limit | None) -> list[tuple[Wave, list[str]]]:
    """Split hosts (in inventory order) into waves; hosts left over form a final wave."""
    left = list(names)
    out: list[tuple[Wave, list[str]]] = []
    for wave in waves:
        if wave.group is not None:
            if wave.group not in groups:
                raise UsageError(f"wave {wave.name!r}: no group {wave.group!r} in the inventory")
            chosen = [n for n in left if n in groups[wave.group]]
        elif wave.size is None:
            chosen = list(left)
        else:
            chosen = left[: max(1, wave.size.of(len(names)))]
        left = [n for n in left if n not in chosen]
        out.append((wave, chosen))
    if left or not out:
        out.append((Wave("rest" if out else "all", None, None, 0, None, max_fail), left))
    return [(w, hosts) for w, hosts in out if hosts]
