"""The OpenAPI 3.1 document, built from the app's own URL map.

Each route gets the operation written for its endpoint below; the paths come from the URL map,
so a route cannot exist without being documented (tests/test_openapi.py checks both ways).
"""
from __future__ import annotations

import re
from typing import Any

from flask import Flask

from pipeline.config import Settings
from serving.problems import PROBLEM_BASE, PROBLEM_MIMETYPE, PROBLEM_TYPES
from serving.profiles import PROFILE_FIELDS

_RULE_ARG = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """Flask's /customers/<customer_id> -> OpenAPI's /customers/{customer_id}."""
    return _RULE_ARG.sub(r"{\1}", rule)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_STR_LIST = {"type": "array", "items": {"type": "string"}}
_TS = _nullable("string", format="date-time", description="ISO-8601 UTC with Z")
PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A customer profile (DESIGN.md mart contract). With `fields`, only customer_id and those fields.",
    "required": ["customer_id"],
    "additionalProperties": False,
    "properties": {
        "customer_id": {"type": "string"},
        "email": _nullable("string"), "first_name": _nullable("string"), "last_name": _nullable("string"),
        "country": _nullable("string"), "locale": _nullable("string"), "timezone": _nullable("string"),
        "marketing_consent": _nullable("boolean"),
        "first_seen_at": _TS, "last_seen_at": _TS,
        "orders_count": {"type": "integer", "minimum": 0},
        "lifetime_value": {"type": "number", "description": "USD, 2 decimals"},
        "last_order_at": _TS,
        "lifecycle_stage": {"type": "string", "enum": ["prospect", "active", "at_risk", "lapsed"]},
        "recently_viewed": {**_STR_LIST, "maxItems": 5}, "cart": _STR_LIST,
        "top_categories": {**_STR_LIST, "maxItems": 3}, "recommendations": {**_STR_LIST, "maxItems": 10},
    },
}
assert tuple(PROFILE_SCHEMA["properties"]) == PROFILE_FIELDS

FIELD_NAMES = {"type": "string", "enum": list(PROFILE_FIELDS)}

# any JSON value: each record is validated on its own and rejected with a reason in the results,
# never the whole request (the shape of a valid one is components/schemas/Event)
_ANY_EVENT: dict[str, Any] = {"description": "An event; see #/components/schemas/Event"}

SCHEMAS: dict[str, Any] = {
    "Profile": PROFILE_SCHEMA,
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": {"type": "string", "enum": [PROBLEM_BASE + slug for slug in PROBLEM_TYPES]},
            "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "instance": {"type": "string"},
        },
    },
    "BatchRequest": {
        "type": "object", "required": ["customer_ids"], "additionalProperties": False,
        "properties": {
            "customer_ids": {"type": "array", "minItems": 1, "maxItems": 1000,
                             "items": {"type": "string", "minLength": 1}},
            "fields": {"type": "array", "items": FIELD_NAMES, "minItems": 1},
        },
    },
    "BatchResponse": {
        "type": "object", "required": ["found", "not_found"], "additionalProperties": False,
        "properties": {"found": {"type": "array", "items": _ref("Profile")},
                       "not_found": {"type": "array", "items": {"type": "string"}}},
    },
    "LookupRequest": {
        "type": "object", "required": ["email"], "additionalProperties": False,
        "properties": {"email": {"type": "string", "format": "email", "maxLength": 320},
                       "fields": {"type": "array", "items": FIELD_NAMES, "minItems": 1}},
    },
    "Recommendations": {
        "type": "object", "required": ["customer_id", "recommendations"], "additionalProperties": False,
        "properties": {
            "customer_id": {"type": "string"},
            "recommendations": {"type": "array", "items": {
                "type": "object",
                "required": ["rank", "product_id", "score", "reason", "name", "category", "price", "currency",
                             "url", "image_url", "in_stock"],
                "properties": {
                    "rank": {"type": "integer", "minimum": 1}, "product_id": {"type": "string"},
                    "score": _nullable("number"), "reason": _nullable("string"),
                    "name": _nullable("string"), "category": _nullable("string"),
                    "price": _nullable("number"), "currency": _nullable("string"),
                    "url": _nullable("string"), "image_url": _nullable("string"),
                    "in_stock": _nullable("boolean"),
                },
            }},
        },
    },
    "MergeFields": {
        "type": "object", "additionalProperties": {"type": "string"},
        "description": "Flat strings for merge tags; see docs/api.md 'Merge fields'.",
        "required": [f for f in PROFILE_FIELDS],
    },
    "Event": {
        "type": "object",
        "description": "One event (DESIGN.md events contract); invalid records are rejected per record.",
        "properties": {
            "event_id": {"type": "string"}, "event_type": {"type": "string"},
            "occurred_at": {"type": ["string", "integer"]}, "customer_id": {"type": "string"},
            "anonymous_id": {"type": "string"}, "product_id": {"type": "string"},
            "properties": {"type": "object"},
        },
    },
    "EventsRequest": {
        "description": "A JSON array of events or {\"events\": [...]}; at most collector_max_events "
                       "(1,000) events and collector_max_body_bytes (5 MiB) per request.",
        "oneOf": [
            {"type": "array", "minItems": 1, "items": _ANY_EVENT},
            {"type": "object", "required": ["events"], "additionalProperties": False,
             "properties": {"events": {"type": "array", "minItems": 1, "items": _ANY_EVENT}}},
        ],
    },
    "CollectorResponse": {
        "type": "object", "required": ["batch_id", "received", "accepted", "duplicates", "rejected", "results"],
        "properties": {
            "batch_id": {"type": "string"}, "received": {"type": "integer"}, "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"}, "rejected": {"type": "integer"},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["index", "event_id", "status"],
                "properties": {"index": {"type": "integer"}, "event_id": _nullable("string"),
                               "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
                               "reason": {"type": "string"}},
            }},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object", "required": ["status", "version", "published_at", "age_seconds"],
        "properties": {"status": {"const": "ready"}, "version": {"type": "integer"},
                       "cycle_id": {"type": "string"}, "as_of": {"type": "string"},
                       "published_at": {"type": "string"}, "age_seconds": {"type": "number"}},
    },
}

_HEADERS = {
    "X-Sendtime-Version": {"description": "The published version the answer was read from (0: none yet).",
                           "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "X-Request-Id": {"description": "The request id (the client's X-Request-Id when valid).",
                     "schema": {"type": "string"}},
}
_CACHE_HEADERS = {
    **_HEADERS,
    "ETag": {"description": "Strong validator of this representation.", "schema": {"type": "string"}},
    "Cache-Control": {"description": "private, max-age=<cache_max_age>", "schema": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict[str, Any]:
    return {"description": description, "headers": headers or _HEADERS,
            "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _HEADERS,
            "content": {PROBLEM_MIMETYPE: {"schema": _ref("Problem")}}}


def _problems(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input (what was wrong is in detail)", 401: "No, bad or revoked API key",
            403: "Missing scope, or client address not allowed", 404: "Not found",
            405: "Method not allowed", 413: "Body too large", 415: "Body is not application/json",
            429: "Over the key's rate limit (see Retry-After)", 503: "Store unavailable or not ready"}
    return {str(c): _problem(text[c]) for c in codes}


_SECURED = (401, 403, 405, 429, 503)
_ID = {"name": "customer_id", "in": "path", "required": True,
       "schema": {"type": "string", "minLength": 1},
       "description": "Any id without '/' except 'batch' and 'lookup' (fetch such ids with POST /customers/batch)."}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _get_cached(summary: str, schema: str, params: list, extra_codes: tuple[int, ...]) -> dict[str, Any]:
    return {"get": {
        "summary": summary, "parameters": params, "security": [{"bearerAuth": []}],
        "responses": {"200": _json(_ref(schema), "OK", _CACHE_HEADERS),
                      "304": {"description": "Not modified (If-None-Match matched)", "headers": _CACHE_HEADERS},
                      **_problems(*extra_codes, 404, *_SECURED)},
    }}


OPERATIONS: dict[str, dict[str, Any]] = {
    "profiles.get_customer": _get_cached(
        "A customer's profile", "Profile",
        [_ID, {"name": "fields", "in": "query", "required": False, "style": "form", "explode": False,
               "schema": {"type": "array", "items": FIELD_NAMES, "minItems": 1},
               "description": "Comma list of profile fields; customer_id is always included."}], (400,)),
    "profiles.recommendations": _get_cached(
        "Recommended products with catalog details", "Recommendations",
        [_ID, {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}], (400,)),
    "profiles.merge": _get_cached("Flat merge-tag strings with fallbacks", "MergeFields", [_ID], ()),
    "profiles.batch": {"post": {
        "summary": "Up to 1,000 profiles by id", "security": [{"bearerAuth": []}],
        "requestBody": _body("BatchRequest"),
        "responses": {"200": _json(_ref("BatchResponse"), "Found profiles and the ids not found"),
                      **_problems(400, 413, 415, *_SECURED)},
    }},
    "profiles.lookup": {"post": {
        "summary": "A profile by email (the email stays out of URLs and logs)", "security": [{"bearerAuth": []}],
        "requestBody": _body("LookupRequest"),
        "responses": {"200": _json(_ref("Profile"), "The profile"), **_problems(400, 404, 413, 415, *_SECURED)},
    }},
    "events.post_events": {"post": {
        "summary": "The collector: a batch of events, per-record results, idempotent by event_id",
        "security": [{"bearerAuth": []}], "requestBody": _body("EventsRequest"),
        "responses": {"200": _json(_ref("CollectorResponse"), "Per-record results"),
                      **_problems(400, 413, 415, *_SECURED)},
    }},
    "health.health": {"get": {"summary": "Alive", "security": [],
                              "responses": {"200": _json(_ref("Health"), "Alive"), **_problems(405)}}},
    "health.ready": {"get": {"summary": "A published state exists and is fresh enough", "security": [],
                             "responses": {"200": _json(_ref("Ready"), "Ready"), **_problems(405, 503)}}},
    "health.openapi": {"get": {"summary": "This document", "security": [],
                               "responses": {"200": {"description": "OpenAPI 3.1 document", "headers": _HEADERS,
                                                     "content": {"application/json": {"schema": {"type": "object"}}}},
                                             **_problems(405)}}},
    "metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                "responses": {"200": {"description": "Prometheus text format",
                                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                                              **_problems(405)}}},
    "status.status_page": {"get": {"summary": "HTML status page (admin key unless status_page_access=open)",
                                   "security": [{"bearerAuth": []}, {}],
                                   "responses": {"200": {"description": "The page",
                                                         "content": {"text/html": {"schema": {"type": "string"}}}},
                                                 **_problems(401, 403, 405, 503)}}},
}


def _operation(endpoint: str) -> dict[str, Any]:
    key = endpoint.replace("health_v1.", "health.")
    if key in OPERATIONS:
        return OPERATIONS[key]
    # a route of a module this file does not know: documented generically rather than hidden
    return {"get": {"summary": f"{endpoint} (see docs/operations.md)",
                    "responses": {"200": {"description": "OK"}, **_problems(405)}}}


def build_openapi(app: Flask, settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        ops = {}
        for method, op in _operation(rule.endpoint).items():
            if method.upper() in (rule.methods or ()):
                ops[method] = {**op, "operationId": rule.endpoint.replace(".", "_") + "_" + method}
        paths.setdefault(openapi_path(rule.rule), {}).update(ops)
    schemas = dict(SCHEMAS)
    batch = {**schemas["BatchRequest"]}
    batch["properties"] = {**batch["properties"], "customer_ids": {
        **batch["properties"]["customer_ids"], "maxItems": settings.batch_max_ids}}
    schemas["BatchRequest"] = batch
    return {
        "openapi": "3.1.0",
        "info": {"title": "sendtime API", "version": "1.0.0",
                 "description": "Fresh customer profiles for email personalization. Errors are RFC 9457 "
                                "problems with stable `type` URIs; see docs/api.md."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
