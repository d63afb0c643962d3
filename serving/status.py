"""`GET /status`: the operator's page. Published version and freshness, latest cycles, validation,
quarantine counts, two charts (cycle duration by phase, freshness per published version), and,
once `sendtime consume` has run, the Kafka consumer's state (running or not, last flush, lag,
per-topic counts).

Everything is rendered on the server: the charts are inline SVG, the CSS is inlined, there is no
JavaScript and no external request, so the page works offline, from a saved file, and behind any
proxy. It shows counts, durations, ids of cycles and suites, never a customer id, email or name
(run errors are shown with emails and quoted values, such as a name an engine quotes, redacted).

Access (`settings.status_page_access`): "open", or "key": an API key with the admin scope in
`Authorization: Bearer <key>`, checked by the app's hook like every keyed endpoint (serving/access.py
lists the page as open only in "open" mode). A key in the URL (`?key=`) is not accepted: URLs end
up in proxy logs and browser history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, render_template
from markupsafe import Markup, escape

from pipeline.config import Settings
from pipeline.redact import redact as redact_text
from pipeline.runlog import (
    PipelineSnapshot,
    RunInfo,
    StoreMissing,
    failed_expectations,
    parse_store_time,
    snapshot_for,
)
from serving.access import requires
from serving.auth import ADMIN
from serving.reader import StoreUnavailable, mark_unavailable, recently_unavailable
from serving.state import app_settings

bp = Blueprint("status", __name__, template_folder="templates")

PAGE_RUNS = 20  # rows of the cycles table
CHART_POINTS = 40  # cycles / versions drawn in the charts
PHASE_COLORS = {"transform": "#4e79a7", "read": "#f28e2b", "validate": "#59a14f", "publish": "#b07aa1"}
# phases a cycle may add later (e.g. ingest_watermark) get the next colour of this palette
EXTRA_COLORS = ("#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac")
OTHER_COLOR = "#9c9c9c"
STATUS_COLORS = {"success": "#2e7d32", "failed": "#c62828", "validation_failed": "#ef6c00", "running": "#1565c0"}
CONSUMER_COLORS = {"running": "#2e7d32", "stopped": "#9c9c9c", "failed": "#c62828", "not responding": "#ef6c00"}
_STATIC = Path(__file__).resolve().parent / "static"


# --------------------------------------------------------------------------- formatting


def human_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    if value < 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def fmt_time(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def redact(text: str | None, limit: int = 300) -> str:
    """Emails and quoted values (names) out, in one linear pass (pipeline/redact.py)."""
    return redact_text(text, limit)


def _failed_expectations(result: Any) -> list[str]:
    """'expectation (column): n unexpected' lines; only names and counts, never sample values."""
    return [
        f.expectation
        + (f" ({', '.join(f.columns)})" if f.columns else "")
        + (f": {f.unexpected_count} unexpected" if f.unexpected_count is not None else "")
        for f in failed_expectations(result)
    ]


# --------------------------------------------------------------------------- charts (inline SVG)


@dataclass
class Scale:
    top: float
    unit: float
    unit_name: str


def _scale(max_value: float) -> Scale:
    """A round axis top (4 equal steps) and a display unit for a span of seconds."""
    unit, name = next(((u, n) for u, n in ((86400, "d"), (3600, "h"), (60, "min")) if max_value >= 2 * u), (1, "s"))
    span = max(max_value / unit, 1e-6)
    step = next((s for s in _NICE_STEPS if s * 4 >= span), span / 4)
    return Scale(top=step * 4 * unit, unit=unit, unit_name=name)


_NICE_STEPS = tuple(m * 10.0**e for e in range(-3, 5) for m in (1, 2, 2.5, 5))


_W, _H, _L, _R, _T, _B = 720, 250, 56, 12, 30, 34


def _axes(scale: Scale, caption: str) -> list[str]:
    out = []
    plot_h = _H - _T - _B
    for i in range(5):
        value = scale.top * i / 4
        y = _T + plot_h - plot_h * i / 4
        label = f"{value / scale.unit:g} {scale.unit_name}"
        out.append(f'<line class="grid" x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    out.append(f'<text class="caption" x="{_L}" y="{_H - 6}">{escape(caption)}</text>')
    return out


def _svg(chart_id: str, title: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f'<title>{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def _empty(chart_id: str, title: str, message: str) -> Markup:
    return _svg(
        chart_id,
        title,
        [f'<text class="empty" x="{_W / 2}" y="{_H / 2}" text-anchor="middle">{escape(message)}</text>'],
    )


def phase_colors(runs: Sequence[RunInfo]) -> dict[str, str]:
    """The phases the runs recorded, in cycle order (known ones first), each with its colour."""
    names = list(dict.fromkeys(name for run in runs for name in run.phases))
    known = [n for n in PHASE_COLORS if n in names]
    extra = [n for n in names if n not in PHASE_COLORS]
    colors = {n: PHASE_COLORS[n] for n in known}
    colors.update({n: EXTRA_COLORS[i % len(EXTRA_COLORS)] for i, n in enumerate(extra)})
    return dict(sorted(colors.items(), key=lambda kv: names.index(kv[0])))


def duration_chart(runs: Sequence[RunInfo]) -> Markup:
    """Stacked bars, oldest cycle left: seconds per phase; the bar's base line shows the status."""
    title = "Cycle duration by phase"
    finished = [r for r in reversed(runs) if r.status != "running"][-CHART_POINTS:]
    if not finished:
        return _empty("chart-duration", title, "no finished cycle yet")
    totals = [max(sum(r.phases.values()), r.duration or 0.0) for r in finished]
    colors = phase_colors(finished)
    scale = _scale(max(totals) or 1.0)
    plot_w, plot_h = _W - _L - _R, _H - _T - _B
    slot = plot_w / len(finished)
    bar = min(max(2.0, slot * 0.7), 36.0)
    body = _axes(scale, f"last {len(finished)} cycles, oldest left; colour = phase, base line = status")
    for i, (run, total) in enumerate(zip(finished, totals)):
        x = _L + i * slot + (slot - bar) / 2
        y = _T + plot_h
        tip = [f"{run.cycle_id} {run.status} {human_seconds(run.duration)}"]
        parts = list(run.phases.items())
        other = total - sum(run.phases.values())
        if other > 1e-6:
            parts.append(("other", other))
        for phase, seconds in parts:
            h = plot_h * seconds / scale.top
            y -= h
            color = colors.get(phase, OTHER_COLOR)
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0):.1f}" '
                f'fill="{color}"><title>{escape(phase)}: {escape(human_seconds(seconds))}</title></rect>'
            )
            tip.append(f"{phase} {human_seconds(seconds)}")
        body.append(
            f'<rect class="status" x="{x:.1f}" y="{_T + plot_h + 2:.1f}" width="{bar:.1f}" height="4" '
            f'fill="{STATUS_COLORS.get(run.status, OTHER_COLOR)}"><title>{escape("; ".join(tip))}</title></rect>'
        )
    legend_x = _L + 8
    for phase, color in colors.items():
        body.append(
            f'<rect x="{legend_x}" y="6" width="10" height="10" fill="{color}"/>'
            f'<text class="legend" x="{legend_x + 14}" y="15">{phase}</text>'
        )
        legend_x += 14 + 7 * len(phase) + 16
    return _svg("chart-duration", title, body)


def freshness_chart(snap: PipelineSnapshot, threshold: float) -> Markup:
    """Per published version (oldest left): how old the newest data was when it went live; the
    last point is the current lag (now). The dashed line is the readiness threshold."""
    title = "Freshness lag per published version"
    versions = [v for v in reversed(snap.versions) if v.lag_at_publish is not None][-CHART_POINTS:]
    points = [(f"v{v.version} at publish", v.lag_at_publish) for v in versions]
    if snap.freshness_lag is not None:
        points.append(("now", snap.freshness_lag))
    if not points:
        return _empty("chart-freshness", title, "nothing published yet")
    top_value = max(p[1] for p in points)
    show_threshold = threshold <= top_value * 1.5
    scale = _scale(max(top_value, threshold if show_threshold else 0) or 1.0)
    plot_w, plot_h = _W - _L - _R, _H - _T - _B
    step = plot_w / max(len(points) - 1, 1)
    coords = [
        (_L + (i * step if len(points) > 1 else plot_w / 2), _T + plot_h - plot_h * min(value, scale.top) / scale.top)
        for i, (_, value) in enumerate(points)
    ]
    body = _axes(scale, f"{len(points)} points: lag when each version went live, last = now")
    if show_threshold:
        y = _T + plot_h - plot_h * threshold / scale.top
        body.append(
            f'<line class="threshold" x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}">'
            f'<title>ready_max_age {escape(human_seconds(threshold))}</title></line>'
        )
    body.append('<polyline class="line" fill="none" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
    for (label, value), (x, y) in zip(points, coords):
        cls = "dot now" if label == "now" else "dot"
        body.append(
            f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="4">'
            f'<title>{escape(label)}: {escape(human_seconds(value))}</title></circle>'
        )
    return _svg("chart-freshness", title, body)


# --------------------------------------------------------------------------- Kafka


@dataclass
class TopicRow:
    topic: str
    source: str
    batches: int
    received: int
    accepted: int
    rejected: int
    skipped: int
    rate: float | None  # records a second (running consumers only)
    lag: int | None  # summed over the topic's partitions (running consumers only)
    last_batch_at: datetime | None


def kafka_topics(snap: PipelineSnapshot) -> list[TopicRow]:
    """One row per topic: the lake totals, with the running consumers' rate and lag beside them."""
    lag: dict[str, int] = {}
    for p in snap.kafka_lag():
        lag[p.topic] = lag.get(p.topic, 0) + p.lag
    rates = snap.kafka_rates()
    rows = {
        t.topic: TopicRow(
            t.topic,
            t.source,
            t.batches,
            t.received,
            t.accepted,
            t.rejected,
            t.skipped,
            rates.get(t.topic),
            lag.get(t.topic),
            parse_store_time(t.last_batch_at),
        )
        for t in snap.kafka_topics
    }
    for consumer in snap.consumers:  # a topic consumed but without a batch yet (nothing written to it)
        for topic, source in consumer.sources.items():
            rows.setdefault(topic, TopicRow(topic, source, 0, 0, 0, 0, 0, rates.get(topic), lag.get(topic), None))
    return [rows[k] for k in sorted(rows)]


# --------------------------------------------------------------------------- the page


@lru_cache(maxsize=1)
def _css() -> str:
    return (_STATIC / "status.css").read_text()


def _context(settings: Settings, snap: PipelineSnapshot | None, problem: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "problem": problem,
        "css": Markup(_css()),
        "fmt_time": fmt_time,
        "human": human_seconds,
        "redact": redact,
        "status_colors": STATUS_COLORS,
        "threshold": settings.ready_max_age_seconds,
        "snap": snap,
    }
    if snap is None:
        return ctx
    lag = snap.freshness_lag
    ctx.update(
        current=snap.current,
        lag=lag,
        fresh=lag is not None and lag <= settings.ready_max_age_seconds,
        last_success_ago=(snap.now - snap.last_success_at).total_seconds() if snap.last_success_at else None,
        runs=snap.runs[:PAGE_RUNS],
        validated=snap.last_validated,
        suite_rows=lambda detail: detail.get("rows") if isinstance(detail, dict) else None,
        failed_expectations=_failed_expectations,
        duration_chart=duration_chart(snap.runs),
        freshness_chart=freshness_chart(snap, settings.ready_max_age_seconds),
        totals=sorted(snap.run_totals.items()),
        consumers=snap.consumers,
        consumer_colors=CONSUMER_COLORS,
        kafka_topics=kafka_topics(snap),
        kafka_lag=snap.kafka_lag(),
        ago=lambda at: (snap.now - at).total_seconds() if at is not None else None,
        phases=list(phase_colors(snap.runs[:PAGE_RUNS])) or list(PHASE_COLORS),
    )
    return ctx


@bp.get("/status")
@requires(ADMIN)  # open instead when status_page_access = "open" (serving/access.py)
def status_page() -> Response:
    settings = app_settings()
    snap, problem = None, None
    try:
        if recently_unavailable():  # a read just failed: say so at once (serving/reader.py)
            raise StoreUnavailable("the store failed a moment ago")
        snap = snapshot_for(settings, runs_limit=CHART_POINTS, versions_limit=CHART_POINTS)
    except StoreMissing:
        problem = "No online store yet: nothing has been published in this home."
    except Exception as exc:  # noqa: BLE001 - the page must say the store is down, not fail
        if not isinstance(exc, StoreUnavailable):
            mark_unavailable()
        problem = f"The online store cannot be read ({type(exc).__name__})."
    html = render_template("status.html", **_context(settings, snap, problem))
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    }
    down = snap is None and problem is not None and not problem.startswith("No online store")
    if down:  # the page says why, and the status says "retry" (docs/recovery.md)
        headers["Retry-After"] = "5"
    return Response(html, status=503 if down else 200, mimetype="text/html", headers=headers)
