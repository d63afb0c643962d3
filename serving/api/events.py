"""The HTTP collector: POST /api/v1/events (DESIGN.md "events" contract).

`collect()` lands one request's events exactly as `sendtime ingest events` would, idempotently:
the ids are claimed in the event index (serving/event_index.py) before the lake write, and the
batch is recorded in the ingest log.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request
from sqlalchemy import Engine

from pipeline.config import Settings
from pipeline.store import engine_for, record_ingest_batch
from serving.access import requires
from serving.event_index import EventIndex
from serving.http import json_body, json_response, set_version
from serving.problems import Problem
from serving.state import state

bp = Blueprint("events", __name__)


def writer():  # noqa: ANN201 - a SQLAlchemy engine, created once per worker on first use
    engine = current_app.extensions.get("sendtime.writer")
    if engine is None:
        engine = current_app.extensions["sendtime.writer"] = engine_for(state().settings)
    return engine


def _records(body: Any) -> list[Any]:
    if isinstance(body, dict) and set(body) == {"events"}:
        body = body["events"]
    if not isinstance(body, list):
        raise Problem("bad-request", 'send a JSON array of events or {"events": [...]}')
    return body


@bp.post("/events")
@requires("events:write")
def post_events() -> Response:
    settings = state().settings
    if request.content_length is not None and request.content_length > settings.collector_max_body_bytes:
        raise Problem("payload-too-large", f"the body is {request.content_length} bytes: "
                                           f"at most {settings.collector_max_body_bytes} per request")
    records = _records(json_body())
    if not records:
        raise Problem("bad-request", "no events in the request")
    if len(records) > settings.collector_max_events:
        raise Problem("too-many-items", f"{len(records)} events: at most {settings.collector_max_events} per request")
    set_version(state().reader.version())
    report = collect(settings, writer(), records)
    results = [{"index": r["index"], "event_id": r.get("event_id"), "status": r["status"],
                **({"reason": r["reason"]} if r.get("reason") else {})} for r in report.get("results", [])]
    return json_response(orjson.dumps({
        "batch_id": report["batch_id"], "received": report["received"], "accepted": report["accepted"],
        "duplicates": report.get("duplicates", 0), "rejected": report["rejected"], "results": results,
    }))


def collect(settings: Settings, engine: Engine, records: list[Any], *, source_file: str = "collector",
            lines: list[int] | None = None, pre_rejected: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Ingest one request's events exactly as `sendtime ingest events` would, idempotently.
    The webhooks (serving/api/webhooks.py) land their events here too, under their own
    `source_file`, with the records they rejected before the contract (`pre_rejected`)."""
    from pipeline.ingest import ingest_records  # imported on first use: pyarrow/duckdb are heavy

    index = EventIndex(engine)
    report = ingest_records(settings, "events", records, source_file=source_file,
                            claim=index.claim, release=index.release, lines=lines, pre_rejected=pre_rejected)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    index.settle(str(data["batch_id"]))
    record_ingest_batch(engine, {"source": "events", "source_file": source_file, **data})
    return data
