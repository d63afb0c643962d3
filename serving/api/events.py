"""The HTTP collector: POST /api/v1/events (DESIGN.md "events" contract).

`collect()` lands one request's events exactly as `sendtime ingest events` would, idempotently,
and never loses an event it answers as accepted (docs/recovery.md, "The collector"):

1. the ids the index already holds are duplicates (read through the store reader: a replica is
   fine, a lagging one only lets a duplicate land twice);
2. the other accepted events are written to the lake and the file is made durable (fsync,
   rename): LAND FIRST;
3. then, in one transaction, their ids are recorded in the index (serving/event_index.py) and the
   batch in the ingest log: CLAIM AFTER. An id another request recorded in between is answered
   `duplicate`: both lake files hold the event and staging keeps the first ingested copy.

A request killed or failing at any point therefore leaves either nothing, or a lake file whose
ids are not recorded yet (a retry lands them again and records them; staging deduplicates), or a
landed and recorded batch. No claim is ever pending, so nothing answers "duplicate" for an event
the lake lacks. When the store cannot record the ids, the answer is a 503 "retry the same
request": the events are already in the lake, so the retry loses and doubles nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Settings
from pipeline.hooks import test_hook
from pipeline.logs import get_logger
from pipeline.store import write_ingest_batches
from serving.access import requires
from serving.event_index import MAX_EVENT_ID_CHARS, claim
from serving.http import json_body, json_response, set_version
from serving.problems import Problem
from serving.reader import StoreReader
from serving.state import state, writer_engine

bp = Blueprint("events", __name__)
log = get_logger("sendtime.collector")


def writer() -> Engine:
    """The store's engine for the collector's writes (serving/state.py): the primary, never the
    read replica, every wait bounded by api_store_timeout. The webhooks write through it too."""
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
        raise Problem(
            "payload-too-large",
            f"the body is {request.content_length} bytes: at most {settings.collector_max_body_bytes} per request",
        )
    records = _records(json_body())
    if not records:
        raise Problem("bad-request", "no events in the request")
    if len(records) > settings.collector_max_events:
        raise Problem("too-many-items", f"{len(records)} events: at most {settings.collector_max_events} per request")
    set_version(state().reader.version())
    report = collect(settings, writer(), records, state().reader)
    results = [
        {
            "index": r["index"],
            "event_id": r.get("event_id"),
            "status": r["status"],
            **({"reason": r["reason"]} if r.get("reason") else {}),
        }
        for r in report.get("results", [])
    ]
    return json_response(
        orjson.dumps(
            {
                "batch_id": report["batch_id"],
                "received": report["received"],
                "accepted": report["accepted"],
                "duplicates": report.get("duplicates", 0),
                "rejected": report["rejected"],
                "results": results,
            }
        )
    )


def collect(
    settings: Settings,
    engine: Engine,
    records: list[Any],
    reader: StoreReader,
    *,
    source_file: str = "collector",
    lines: list[int] | None = None,
    pre_rejected: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Land one request's events, then record their ids and the batch (see the module's docstring).
    The webhooks (serving/api/webhooks.py) land their events here too, under their own
    `source_file`, with the records they rejected before the contract (`pre_rejected`)."""
    from pipeline.ingest import (
        ingest_records,  # imported on first use: pyarrow/duckdb are heavy
    )

    test_hook("collector_landing")
    report = ingest_records(
        settings,
        "events",
        records,
        source_file=source_file,
        known=reader.known_event_ids,
        id_max_length=MAX_EVENT_ID_CHARS,
        lines=lines,
        pre_rejected=pre_rejected,
    )
    data = report.to_dict()
    test_hook("collector_landed")
    landed = [r["event_id"] for r in data["results"] if r["status"] == "accepted"]
    try:
        with engine.begin() as conn:
            won = claim(conn, landed, data["batch_id"])
            for result in data["results"]:
                if result["status"] == "accepted" and result["event_id"] not in won:
                    result["status"] = "duplicate"  # another request landed and recorded it first
            data["accepted"] = sum(1 for r in data["results"] if r["status"] == "accepted")
            data["duplicates"] = sum(1 for r in data["results"] if r["status"] == "duplicate")
            write_ingest_batches(conn, {"source": "events", "source_file": source_file, **data})
    except SQLAlchemyError as exc:
        log.warning(
            "collector: landed events not recorded; the client retries",
            extra={"batch_id": data["batch_id"], "landed": len(landed), "error_type": type(exc).__name__},
        )
        raise Problem(
            "unavailable",
            "the events are stored but the online store cannot record them; retry the "
            "same request (nothing is lost or doubled)",
            {"Retry-After": "1"},
        ) from None
    test_hook("collector_recorded")
    return data
