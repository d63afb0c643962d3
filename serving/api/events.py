"""The HTTP collector: POST /api/v1/events (DESIGN.md "events" contract).

`collect()` lands one request's events exactly as `sendtime ingest events` would, idempotently:
the ids are claimed in the event index (serving/event_index.py) before the lake write, and the
batch is recorded in the ingest log.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request
from sqlalchemy import Engine

from pipeline.config import Settings
from pipeline.store import record_ingest_batch
from serving.access import requires
from serving.event_index import EventIndex
from serving.http import json_body, json_response, set_version
from serving.problems import Problem
from serving.state import state, writer_engine

bp = Blueprint("events", __name__)


def _writer():  # noqa: ANN202 - a SQLAlchemy engine, created once per worker on first use
    return writer_engine()


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
    report = collect(settings, _writer(), records)
    results = [{"index": r["index"], "event_id": r.get("event_id"), "status": r["status"],
                **({"reason": r["reason"]} if r.get("reason") else {})} for r in report.get("results", [])]
    return json_response(orjson.dumps({
        "batch_id": report["batch_id"], "received": report["received"], "accepted": report["accepted"],
        "duplicates": report.get("duplicates", 0), "rejected": report["rejected"], "results": results,
    }))


def collect(settings: Settings, engine: Engine, records: list[Any]) -> dict[str, Any]:
    """Ingest one request's events exactly as `sendtime ingest events` would, idempotently."""
    from pipeline.ingest import ingest_records  # imported on first use: pyarrow/duckdb are heavy

    index = EventIndex(engine)
    report = ingest_records(settings, "events", records, source_file="collector",
                            claim=index.claim, release=index.release)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    index.settle(str(data["batch_id"]))
    record_ingest_batch(engine, {"source": "events", "source_file": "collector", **data})
    return data
