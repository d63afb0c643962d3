"""`GET /api/v1/customers/{customer_id}/send-time?after=ISO`: when to send this customer the email.

The next instant after `after` (default: now) at which the customer's `best_send_hour` starts in
their timezone, in UTC, with the hour, the zone it is read in and its confidence (DESIGN.md
"Engagement and send time"; pipeline/send_time.py does the arithmetic, daylight saving by the IANA
zone). Which profile fields hold the hour, the timezone and the confidence comes from the published
contract (`meta.send_time` in models/marts/_marts.yml), never from a list here. Same key scope,
caching headers (ETag, Cache-Control, 304) and problems as the other profile endpoints; the answer
for a given customer changes once a day (or with a publish), so caching it is safe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, request

from pipeline.clock import iso_z, utcnow
from pipeline.mart_contract import PROFILES, MartContract
from pipeline.send_time import next_send_at, zone_of
from pipeline.timestamps import parse_timestamp
from serving.access import requires
from serving.http import cacheable, etag_of, set_version
from serving.problems import Problem
from serving.profiles import dumps, parse_body
from serving.state import state

bp = Blueprint("send_time", __name__)

READ = "profiles:read"
ROLE = "send_time"  # the column meta key naming each field's role
ROLES = ("local_hour", "zone", "confidence")
# a day either side must stay within the calendar (years 1-9999)
EARLIEST, LATEST = datetime(1, 1, 3), datetime(9999, 12, 29)


def roles(contract: MartContract | None) -> dict[str, str]:
    """role -> profile column, from the contract's `meta.send_time`."""
    found: dict[str, str] = {}
    for column in contract.served if contract is not None else ():
        role = column.meta.get(ROLE)
        if role in ROLES and role not in found:
            found[role] = column.name
    return found


def _after() -> datetime:
    raw = request.args.get("after") if request.query_string else None
    if raw is None:
        return utcnow()
    parsed = parse_timestamp(raw)
    if parsed is None:
        hint = " (a '+' in a query string reads as a space: write %2B)" if " " in raw.strip() else ""
        raise Problem(
            "invalid-parameter",
            f"after must be an ISO-8601 timestamp (with an offset or Z; naive means UTC) or epoch milliseconds{hint}",
        )
    if not EARLIEST <= parsed <= LATEST:
        raise Problem("invalid-parameter", "after must be between 0001-01-03 and 9999-12-29")
    return parsed


def _hour(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)) and value == int(value) and 0 <= int(value) <= 23:
        return int(value)
    return None


@bp.get("/customers/<customer_id:customer_id>/send-time")
@requires(READ)
def send_time(customer_id: str) -> Response:
    after = _after()
    reader = state().reader
    version, body, _etag = reader.profile(customer_id)
    set_version(version)
    if body is None:
        raise Problem("not-found", f"no profile for customer id {customer_id!r}")
    fields = roles(reader.contracts(version).get(PROFILES))
    profile = parse_body(body)
    hour = _hour(profile.get(fields["local_hour"])) if "local_hour" in fields else None
    if hour is None:
        # a state published before the send-time fields existed: the next cycle republishes everyone
        raise Problem(
            "not-ready",
            "the published profiles carry no send hour yet; retry after the next cycle",
            {"Retry-After": "60"},
        )
    zone_name, zone = zone_of(profile.get(fields["zone"]) if "zone" in fields else None)
    send_at = next_send_at(after.replace(tzinfo=UTC), hour, zone)
    payload = dumps(
        {
            "send_at": iso_z(send_at.astimezone(UTC).replace(tzinfo=None)),
            "local_hour": hour,
            "timezone": zone_name,
            "confidence": profile.get(fields["confidence"]) if "confidence" in fields else None,
        }
    )
    return cacheable(payload, etag_of(payload))
