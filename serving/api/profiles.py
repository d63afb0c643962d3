"""Profile endpoints under /api/v1 (DESIGN.md "API contract")."""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Blueprint, Response, g, request

from pipeline.mart_contract import PRODUCTS, PROFILES
from pipeline.store import email_hash
from serving.access import requires
from serving.http import cacheable, etag_of, json_body, json_response, set_version
from serving.problems import Problem
from serving.profiles import UnknownField, check_fields, dumps, merge_fields, parse_body, project
from serving.ratelimit import retry_after_header
from serving.state import state

bp = Blueprint("profiles", __name__)

READ = "profiles:read"
MAX_ID_CHARS = 255
MAX_EMAIL_CHARS = 320
DEFAULT_RECOMMENDATIONS = 10
MAX_RECOMMENDATIONS = 100


def _fields(names: list[str]) -> list[str]:
    try:
        return check_fields(names, state().reader.contracts().get(PROFILES))
    except UnknownField as exc:
        raise Problem("unknown-field", f"unknown field {exc.name!r} in fields") from None


def _fields_param() -> list[str] | None:
    if not request.query_string:  # the common case: skip parsing the query string
        return None
    raw = request.args.get("fields")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise Problem("invalid-parameter", "fields is empty: give a comma list of profile fields")
    return _fields(names)


def _not_found(customer_id: str) -> Problem:
    # the id is not echoed: whatever a client sent stays out of the answer (and any log of it)
    return Problem("not-found", "no profile for this customer id")


def _object(body: Any, allowed: set[str], required: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Problem("bad-request", f"the body must be a JSON object with {required!r}")
    extra = sorted(set(body) - allowed)
    if extra:
        raise Problem("bad-request", f"unknown property {extra[0]!r} in the body")
    if required not in body:
        raise Problem("bad-request", f"the body needs {required!r}")
    return body


def _body_fields(body: dict[str, Any]) -> list[str] | None:
    if "fields" not in body:
        return None
    fields = body["fields"]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise Problem("bad-request", "fields must be a list of profile field names")
    if not fields:
        raise Problem("bad-request", "fields is empty: leave it out for whole profiles")
    return _fields(fields)


@bp.get("/customers/<customer_id:customer_id>")
@requires(READ)
def get_customer(customer_id: str) -> Response:
    fields = _fields_param()
    # read with the key by the auth hook (one statement); otherwise (no hook) read it now
    prefetched = g.get("profile")
    version, body, etag = prefetched if prefetched is not None else state().reader.profile(customer_id)
    set_version(version)
    if body is None:
        raise _not_found(customer_id)
    if fields is None:
        return cacheable(body, etag)  # the stored text as-is: serialized once, at publish
    # a projection is another representation: its own strong validator
    return cacheable(dumps(project(parse_body(body), fields)), f"{etag}.{etag_of(','.join(fields).encode())[:8]}")


@bp.post("/customers/batch")
@requires(READ)
def batch() -> Response:
    body = _object(json_body(), {"customer_ids", "fields"}, "customer_ids")
    ids = body["customer_ids"]
    limit = state().settings.batch_max_ids
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise Problem("bad-request", "customer_ids must be a list of non-empty strings")
    if not ids:
        raise Problem("bad-request", "customer_ids is empty")
    if len(ids) > limit:
        raise Problem("too-many-items", f"{len(ids)} customer_ids: at most {limit} per request")
    # N ids cost N tokens of the caller's rate limit (the hook took one for the request)
    wait = state().limiter.acquire(g.key, len(ids) - 1) if len(ids) > 1 and g.get("key") else 0.0
    if wait:
        raise Problem(
            "rate-limited",
            f"over the rate limit of {g.key!r}: a batch of {len(ids)} ids costs {len(ids)}",
            {"Retry-After": retry_after_header(wait)},
        )
    fields = _body_fields(body)
    unique = list(dict.fromkeys(ids))
    version, found = state().reader.profiles(unique)
    set_version(version)
    if fields is None:
        # whole profiles: the stored texts joined, never parsed
        parts = [found[i] for i in unique if i in found]
        found_json = "[" + ",".join(parts) + "]"
    else:
        found_json = dumps([project(parse_body(found[i]), fields) for i in unique if i in found]).decode()
    not_found = orjson.dumps([i for i in unique if i not in found]).decode()
    return json_response(f'{{"found":{found_json},"not_found":{not_found}}}')


@bp.post("/customers/lookup")
@requires(READ)
def lookup() -> Response:
    body = _object(json_body(), {"email", "fields"}, "email")
    email = body["email"]
    if not isinstance(email, str) or not email.strip() or len(email) > MAX_EMAIL_CHARS or "@" not in email:
        raise Problem("bad-request", "email must be an email address (a string with '@')")
    fields = _body_fields(body)
    version, profile, _etag = state().reader.profile_by_email_hash(email_hash(email))
    set_version(version)
    if profile is None:
        raise Problem("not-found", "no profile has this email")  # never echo the email
    if fields is None:
        return json_response(profile)
    return json_response(dumps(project(parse_body(profile), fields)))


_ASCII_INTEGER = re.compile(r"[0-9]{1,6}")


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_RECOMMENDATIONS
    # ASCII digits only: str.isdigit() accepts "²" and "٣", which int() then refuses (a 500)
    text = raw.strip()
    if not _ASCII_INTEGER.fullmatch(text) or not 1 <= int(text) <= MAX_RECOMMENDATIONS:
        raise Problem("invalid-parameter", f"limit must be an integer from 1 to {MAX_RECOMMENDATIONS}")
    return int(text)


def _recommended(customer_id: str, limit: int | None) -> tuple[int, str | None, list[dict[str, Any]]]:
    """(version, profile body, recommended products with catalog details), from one snapshot.
    A recommended product missing from the catalog is skipped; rank is the served position."""
    reader = state().reader
    with reader.snapshot():
        version, body, _etag = reader.profile(customer_id)
        if body is None:
            return version, None, []
        recs = orjson.loads(reader.recommendations(customer_id) or "[]")
        if limit is not None:
            recs = recs[:limit]
        catalog = reader.products([r["product_id"] for r in recs])
    products = reader.contracts(version).get(PRODUCTS)
    details = [c.name for c in products.served if c.name != "product_id"] if products is not None else []
    out = []
    for rec in recs:
        product_body = catalog.get(rec["product_id"])
        if product_body is None:
            continue
        product = parse_body(product_body)
        out.append(
            {
                "rank": len(out) + 1,
                "product_id": rec["product_id"],
                "score": rec.get("score"),
                "reason": rec.get("reason"),
                **{k: product.get(k) for k in details},
            }
        )
    return version, body, out


@bp.get("/customers/<customer_id:customer_id>/recommendations")
@requires(READ)
def recommendations(customer_id: str) -> Response:
    limit = _limit()
    version, body, items = _recommended(customer_id, limit)
    set_version(version)
    if body is None:
        raise _not_found(customer_id)
    payload = dumps({"customer_id": customer_id, "recommendations": items})
    return cacheable(payload, etag_of(payload))


@bp.get("/customers/<customer_id:customer_id>/merge-fields")
@requires(READ)
def merge(customer_id: str) -> Response:
    version, body, items = _recommended(customer_id, None)
    set_version(version)
    if body is None:
        raise _not_found(customer_id)
    contracts = state().reader.contracts(version)
    payload = orjson.dumps(
        merge_fields(
            parse_body(body),
            items,
            state().settings.merge_field_fallbacks,
            contracts.get(PROFILES),
            contracts.get(PRODUCTS),
        )
    )
    return cacheable(payload, etag_of(payload))
