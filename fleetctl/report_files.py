"""The files a run leaves for others: JSON for scripts, JUnit XML for CI dashboards, and one
self-contained HTML page for people. All three come from the same document, built from the
journal, so `fleetctl report RUN_ID` re-renders any of them later."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from fleetctl import __version__, outfile
from fleetctl.journal import Run
from fleetctl.results import HostResult, uplink_bytes
from fleetctl.terminal import visible

SCHEMA = "fleetctl.report/1"  # bump when a field changes meaning or goes away; adding fields keeps it
FORMATS = ("json", "junit", "html")
FAILED = ("failed", "unreachable")

# Every value a page shows is escaped, and a Mac's control characters are shown, not embedded:
# the page may be printed on a terminal (`report --format html`) or opened in a browser.
_html = jinja2.Environment(loader=jinja2.PackageLoader("fleetctl", "templates"), autoescape=True,
                           undefined=jinja2.StrictUndefined,
                           finalize=lambda value: visible(value) if isinstance(value, str) else value)


@dataclass
class Outputs:
    """Where to write each format (None: not asked for)."""

    json: Path | None = None
    junit: Path | None = None
    html: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        return [(fmt, path) for fmt in FORMATS if (path := getattr(self, fmt))]


def iso_time(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


def document(run: Run, results: list[HostResult], progress: list[tuple[float, int, int, int]] = ()) -> dict:
    """The versioned report (schema in docs/report-schema.md). PROGRESS: the journal's points of
    (time, converged, pending, failed), one per pass: how a campaign converged over time."""
    return {
        "schema": SCHEMA,
        "fleetctl_version": __version__,
        "run_id": run.id,
        "action": run.action,
        "state": run.state,
        "playbook": run.playbook,
        "inventory": run.inventory,
        "limit": run.limit,
        "started": iso_time(run.started),
        "finished": iso_time(run.finished) or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "deadline": iso_time(run.until),  # a campaign's (fleetctl run --until); null: one pass
        "retry_every_s": run.retry_every,
        "summary": {
            "hosts": len(results),
            "by_status": dict(Counter(r.status for r in results)),
            "by_version": dict(Counter(r.version_after or "none" for r in results)),
            "uploaded_bytes": sum(r.uploaded_bytes for r in results),
            "uplink_bytes_by_site": uplink_bytes(results),
            "woken": sorted(r.name for r in results if r.woken_by),
        },
        "convergence": [{"at": iso_time(at), "converged": c, "pending": p, "failed": f} for at, c, p, f in progress],
        "hosts": [asdict(r) for r in results],
    }


def junit(doc: dict) -> str:
    """One testcase per Mac; failed -> <failure>, unreachable -> <error>, not run -> <skipped>.
    A Mac's text goes through `visible`: XML 1.0 cannot hold NUL or most control characters at all."""
    hosts = doc["hosts"]
    counts = Counter(h["status"] for h in hosts)
    total_time = f"{sum(h['duration_s'] for h in hosts):.3f}"
    attrs = {"tests": str(len(hosts)), "failures": str(counts["failed"]), "errors": str(counts["unreachable"]),
             "skipped": str(sum(n for s, n in counts.items() if s not in ("ok", "changed", *FAILED))),
             "time": total_time}
    suites = ET.Element("testsuites", name="fleetctl", **attrs)
    suite = ET.SubElement(suites, "testsuite", name=f"fleetctl {doc['action']} {doc['run_id']}",
                          timestamp=doc["started"] or "", **attrs)
    for h in hosts:
        case = ET.SubElement(suite, "testcase", classname=f"fleetctl.{doc['action']}", name=h["name"],
                             time=f"{h['duration_s']:.3f}")
        reason = visible(h["reason"] or h["status"])
        steps = [f"{s['name']}: {s['status']} ({s['duration_s']:.1f}s)"
                 + (f"\n{s['detail']}" if s["status"] == "failed" and s["detail"] else "") for s in h["steps"]]
        detail = "\n".join([f"reason: {reason}", *steps])
        if h["log"]:
            detail += "\n\nagent log:\n" + "\n".join(h["log"])
        detail = visible(detail)
        if h["status"] == "failed":
            ET.SubElement(case, "failure", message=reason, type="failed").text = detail
        elif h["status"] == "unreachable":
            ET.SubElement(case, "error", message=reason, type="unreachable").text = detail
        elif h["status"] not in ("ok", "changed"):
            ET.SubElement(case, "skipped", message=reason)
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _histogram(durations: list[float], buckets: int = 10) -> list[tuple[str, int]]:
    """How long Macs took, in BUCKETS equal slices up to the slowest: readable at 5 or 5,000 hosts."""
    top = max(durations + [0.001])
    counts = Counter(min(int(d / top * buckets), buckets - 1) for d in durations)
    digits = 1 if top < 10 else 0
    return [(f"{i * top / buckets:.{digits}f}-{(i + 1) * top / buckets:.{digits}f}s", counts[i]) for i in range(buckets)]


def _convergence(points: list[dict], total: int, width: int = 420, height: int = 110) -> dict[str, str]:
    """SVG polyline points (step lines) of converged, pending and failed Macs over the run's time."""
    if len(points) < 2:
        return {}
    times = [datetime.fromisoformat(p["at"]).timestamp() for p in points]
    span = max(times[-1] - times[0], 1.0)
    lines = {}
    for series in ("converged", "pending", "failed"):
        xy: list[str] = []
        for t, p in zip(times, points):
            x, y = round((t - times[0]) / span * width, 1), round(height - p[series] / max(total, 1) * height, 1)
            if xy:
                xy.append(f"{x},{xy[-1].split(',')[1]}")  # a step: the count held until this pass
            xy.append(f"{x},{y}")
        lines[series] = " ".join(xy)
    return lines


def html(doc: dict) -> str:
    hosts = doc["hosts"]
    statuses = sorted(doc["summary"]["by_status"].items(), key=lambda kv: -kv[1])
    histogram = _histogram([h["duration_s"] for h in hosts])
    return _html.get_template("report.html.j2").render(
        doc=doc, hosts=hosts, statuses=statuses, histogram=histogram,
        most=max([n for _, n in statuses] + [1]), most_bucket=max([n for _, n in histogram] + [1]),
        convergence=_convergence(doc["convergence"], len(hosts)) if doc["deadline"] else {})


def render(fmt: str, doc: dict) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=1) + "\n"
    return junit(doc) if fmt == "junit" else html(doc)


def write(outputs: Outputs, run: Run, results: list[HostResult],
          progress: list[tuple[float, int, int, int]] = ()) -> None:
    doc = document(run, results, progress)
    for fmt, path in outputs.items():
        outfile.write(path, render(fmt, doc))
