"""The OpenAPI 3.1 document, built from the app's own URL map.

Each route gets the operation written for its endpoint below; the paths come from the URL map,
so a route cannot exist without being documented (tests/test_openapi.py checks both ways).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Flask

from pipeline.config import Settings
from pipeline.mart_contract import PRODUCTS, PROFILES, Column, Contracts, MartContract, checksum
from serving.problems import PROBLEM_BASE, PROBLEM_MIMETYPE, PROBLEM_TYPES
from serving.profiles import field_names

_RULE_ARG = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """Flask's /customers/<customer_id> -> OpenAPI's /customers/{customer_id}."""
    return _RULE_ARG.sub(r"{\1}", rule)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_KINDS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "money": {"type": "number"},
    "boolean": {"type": "boolean"},
    "timestamp": {"type": "string", "format": "date-time"},
    "list": {"type": "array", "items": {"type": "string"}},
}


def column_schema(column: Column) -> dict[str, Any]:
    """The JSON schema of one served column, from its contract (docs/models.md "The mart contract")."""
    schema = dict(_KINDS[column.kind])
    if column.kind == "list":
        if column.max_items is not None:
            schema["maxItems"] = column.max_items
        return {**schema, "description": column.description}
    if column.accepted_values is not None:
        schema["enum"] = list(column.accepted_values)
    if column.minimum is not None:
        schema["minimum"] = column.minimum
    if column.maximum is not None:
        schema["maximum"] = column.maximum
    if not column.not_null:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    description = column.description
    if column.kind == "timestamp":
        description = (description + " ISO-8601 UTC with Z.").strip()
    elif column.kind == "money":
        description = (description + f" {column.scale} decimals.").strip()
    return {**schema, "description": description}


def object_schema(contract: MartContract | None, description: str) -> dict[str, Any]:
    if contract is None:  # nothing published yet: no field is known
        return {
            "type": "object",
            "description": description,
            "required": ["customer_id"],
            "properties": {"customer_id": {"type": "string"}},
        }
    return {
        "type": "object",
        "description": description,
        "required": ["customer_id"],
        "additionalProperties": False,
        "properties": {c.name: column_schema(c) for c in contract.served},
    }


FIELD_NAMES = _ref("ProfileField")

# any JSON value: each record is validated on its own and rejected with a reason in the results,
# never the whole request (the shape of a valid one is components/schemas/Event)
_ANY_EVENT: dict[str, Any] = {"description": "An event; see #/components/schemas/Event"}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": {"type": "string", "enum": [PROBLEM_BASE + slug for slug in PROBLEM_TYPES]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["customer_ids"],
        "additionalProperties": False,
        "properties": {
            "customer_ids": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {"type": "string", "minLength": 1},
            },
            "fields": {"type": "array", "items": FIELD_NAMES, "minItems": 1},
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["found", "not_found"],
        "additionalProperties": False,
        "properties": {
            "found": {"type": "array", "items": _ref("Profile")},
            "not_found": {"type": "array", "items": {"type": "string"}},
        },
    },
    "LookupRequest": {
        "type": "object",
        "required": ["email"],
        "additionalProperties": False,
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 320},
            "fields": {"type": "array", "items": FIELD_NAMES, "minItems": 1},
        },
    },
    "Event": {
        "type": "object",
        "description": "One event (DESIGN.md events contract); invalid records are rejected per record.",
        "properties": {
            "event_id": {"type": "string"},
            "event_type": {"type": "string"},
            "occurred_at": {"type": ["string", "integer"]},
            "customer_id": {"type": "string"},
            "anonymous_id": {"type": "string"},
            "product_id": {"type": "string"},
            "properties": {"type": "object"},
        },
    },
    "EventsRequest": {
        "description": "A JSON array of events or {\"events\": [...]}; at most collector_max_events "
        "(1,000) events and collector_max_body_bytes (5 MiB) per request.",
        "oneOf": [
            {"type": "array", "minItems": 1, "items": _ANY_EVENT},
            {
                "type": "object",
                "required": ["events"],
                "additionalProperties": False,
                "properties": {"events": {"type": "array", "minItems": 1, "items": _ANY_EVENT}},
            },
        ],
    },
    "CollectorResponse": {
        "type": "object",
        "required": ["batch_id", "received", "accepted", "duplicates", "rejected", "results"],
        "properties": {
            "batch_id": {"type": "string"},
            "received": {"type": "integer"},
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "rejected": {"type": "integer"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "event_id", "status"],
                    "properties": {
                        "index": {"type": "integer"},
                        "event_id": _nullable("string"),
                        "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "SendTime": {
        "type": "object",
        "required": ["send_at", "local_hour", "timezone", "confidence"],
        "additionalProperties": False,
        "properties": {
            "send_at": {
                "type": "string",
                "format": "date-time",
                "description": "The next start of local_hour in timezone after `after`, UTC with Z.",
            },
            "local_hour": {
                "type": "integer",
                "minimum": 0,
                "maximum": 23,
                "description": "The customer's best_send_hour.",
            },
            "timezone": {
                "type": "string",
                "description": "The IANA zone local_hour is read in: the profile's timezone, UTC when "
                "it is missing or not an IANA name.",
            },
            "confidence": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": 1,
                "description": "best_send_hour_confidence (0: the hour is the customer's peers').",
            },
        },
    },
    "SendGridEvents": {
        "type": "array",
        "description": "The SendGrid Event Webhook's JSON array of event objects; each one "
        "lands, is skipped or is quarantined on its own.",
        "items": {"description": "A SendGrid event (event, email, timestamp, sg_event_id, custom args, ...)"},
    },
    "MailchimpEvents": {
        "type": "object",
        "required": ["mandrill_events"],
        "properties": {
            "mandrill_events": {
                "type": "string",
                "format": "json-array",
                "contentMediaType": "application/json",
                "contentSchema": {"type": "array", "items": {"description": "A Mailchimp Transactional event"}},
                "description": "The JSON text of an array of Mailchimp Transactional events (format json-array: "
                "text that is not a JSON array is a 400)",
            }
        },
    },
    "WebhookResponse": {
        "type": "object",
        "required": ["batch_id", "received", "accepted", "duplicates", "rejected", "skipped", "skipped_by_reason"],
        "properties": {
            "batch_id": _nullable("string"),
            "received": {"type": "integer"},
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "rejected": {"type": "integer"},
            "skipped": {"type": "integer"},
            "skipped_by_reason": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object",
        "required": ["status", "version", "published_at", "age_seconds"],
        "properties": {
            "status": {"const": "ready"},
            "version": {"type": "integer"},
            "cycle_id": {"type": "string"},
            "as_of": {"type": "string"},
            "published_at": {"type": "string"},
            "age_seconds": {"type": "number"},
        },
    },
}

_HEADERS = {
    "X-Sendtime-Version": {
        "description": "The published version the answer was read from (0: none yet).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "X-Request-Id": {
        "description": "The request id (the client's X-Request-Id when valid).",
        "schema": {"type": "string"},
    },
}
_CACHE_HEADERS = {
    **_HEADERS,
    "ETag": {"description": "Strong validator of this representation.", "schema": {"type": "string"}},
    "Cache-Control": {"description": "private, max-age=<cache_max_age>", "schema": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers or _HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _HEADERS, "content": {PROBLEM_MIMETYPE: {"schema": _ref("Problem")}}}


def _problems(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input (what was wrong is in detail)",
        401: "No, bad or revoked API key",
        403: "Missing scope, or client address not allowed",
        404: "Not found",
        405: "Method not allowed",
        413: "Body too large",
        415: "Body is not application/json",
        429: "Over the key's rate limit (see Retry-After)",
        503: "Store unavailable or not ready",
    }
    return {str(c): _problem(text[c]) for c in codes}


_SECURED = (401, 403, 405, 429, 503)
_WEBHOOK_401 = _problem("No valid platform signature (when its signing key is set), else no, bad or revoked API key")
_ID = {
    "name": "customer_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "Any id without '/' except 'batch' and 'lookup' (fetch such ids with POST /customers/batch).",
}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _secured(scope: str) -> list[dict[str, list[str]]]:
    """Either scheme: an API key, or an OAuth 2.0 access token holding `scope` (admin also does)."""
    return [{"bearerAuth": []}, {"oauth2": [scope]}]


READ, WRITE, ADMIN = "profiles:read", "events:write", "admin"
SCOPE_DESCRIPTIONS = {
    READ: "read profiles, recommendations and merge fields",
    WRITE: "post events to the collector",
    ADMIN: "every scope, the status page, metrics (when keyed)",
}


def _get_cached(summary: str, schema: str, params: list, extra_codes: tuple[int, ...]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "security": _secured(READ),
            "responses": {
                "200": _json(_ref(schema), "OK", _CACHE_HEADERS),
                "304": {"description": "Not modified (If-None-Match matched)", "headers": _CACHE_HEADERS},
                **_problems(*extra_codes, 404, *_SECURED),
            },
        }
    }


OPERATIONS: dict[str, dict[str, Any]] = {
    "profiles.get_customer": _get_cached(
        "A customer's profile",
        "Profile",
        [
            _ID,
            {
                "name": "fields",
                "in": "query",
                "required": False,
                "style": "form",
                "explode": False,
                "schema": {"type": "array", "items": FIELD_NAMES, "minItems": 1},
                "description": "Comma list of profile fields; customer_id is always included.",
            },
        ],
        (400,),
    ),
    "profiles.recommendations": _get_cached(
        "Recommended products with catalog details",
        "Recommendations",
        [
            _ID,
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            },
        ],
        (400,),
    ),
    "profiles.merge": _get_cached("Flat merge-tag strings with fallbacks", "MergeFields", [_ID], ()),
    "send_time.send_time": _get_cached(
        "When to send: the next instant at the customer's best local hour",
        "SendTime",
        [
            _ID,
            {
                "name": "after",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "sendtime-timestamp"},
                "description": "ISO-8601 timestamp (with an offset or Z; naive is UTC; encode '+' as %2B) or epoch "
                "milliseconds; send_at is the first start of the hour after it. Default: now.",
            },
        ],
        (400,),
    ),
    "webhooks.sendgrid": {
        "post": {
            "summary": "SendGrid Event Webhook: engagement events (signed with sendgrid_webhook_public_key, else an "
            "events:write key)",
            "security": [{"bearerAuth": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SendGridEvents")}}},
            "responses": {
                "200": _json(_ref("WebhookResponse"), "Landed, skipped and quarantined counts"),
                **_problems(400, 403, 405, 413, 415, 429, 503),
                "401": _WEBHOOK_401,
            },
        }
    },
    "webhooks.mailchimp": {
        "post": {
            "summary": "Mailchimp Transactional webhook: engagement events (signed with mailchimp_webhook_key, else an "
            "events:write key)",
            "security": [{"bearerAuth": []}, {}],
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _ref("MailchimpEvents")}},
            },
            "responses": {
                "200": _json(_ref("WebhookResponse"), "Landed, skipped and quarantined counts"),
                **_problems(400, 403, 405, 413, 415, 429, 503),
                "401": _WEBHOOK_401,
            },
        }
    },
    "profiles.batch": {
        "post": {
            "summary": "Up to 1,000 profiles by id (N ids cost N tokens of the rate limit)",
            "security": _secured(READ),
            "requestBody": _body("BatchRequest"),
            "responses": {
                "200": _json(_ref("BatchResponse"), "Found profiles and the ids not found"),
                **_problems(400, 413, 415, *_SECURED),
            },
        }
    },
    "profiles.lookup": {
        "post": {
            "summary": "A profile by email (the email stays out of URLs and logs)",
            "security": _secured(READ),
            "requestBody": _body("LookupRequest"),
            "responses": {"200": _json(_ref("Profile"), "The profile"), **_problems(400, 404, 413, 415, *_SECURED)},
        }
    },
    "events.post_events": {
        "post": {
            "summary": "The collector: a batch of events, per-record results, idempotent by event_id",
            "security": _secured(WRITE),
            "requestBody": _body("EventsRequest"),
            "responses": {
                "200": _json(_ref("CollectorResponse"), "Per-record results"),
                **_problems(400, 413, 415, *_SECURED),
            },
        }
    },
    "health.health": {
        "get": {
            "summary": "Alive",
            "security": [],
            "responses": {"200": _json(_ref("Health"), "Alive"), **_problems(405)},
        }
    },
    "health.ready": {
        "get": {
            "summary": "A published state exists and is fresh enough",
            "security": [],
            "responses": {"200": _json(_ref("Ready"), "Ready"), **_problems(405, 503)},
        }
    },
    "health.openapi": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document",
                    "headers": _HEADERS,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_problems(405),
            },
        }
    },
    "metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_problems(405),
            },
        }
    },
    "oauth.token": {
        "post": {
            "summary": "OAuth 2.0 client credentials (RFC 6749 4.4): an access token for a client",
            "description": "Client credentials by HTTP Basic (client_secret_basic) or in the body (client_secret_post). "
            "Errors follow RFC 6749 section 5.2 (JSON): invalid_client 401, unsupported_grant_type, "
            "invalid_scope and invalid_request 400. Failed client authentications are rate limited per "
            "address (429).",
            "security": [{"clientBasic": []}, {}],
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")}},
            },
            "responses": {
                "200": _json(_ref("TokenResponse"), "An access token"),
                "400": _json(_ref("OAuthError"), "invalid_request, unsupported_grant_type or invalid_scope"),
                "401": _json(_ref("OAuthError"), "invalid_client"),
                **_problems(405, 413, 429, 503),
            },
        }
    },
    "status.status_page": {
        "get": {
            "summary": "HTML status page (admin key unless status_page_access=open)",
            "security": [*_secured(ADMIN), {}],
            "responses": {
                "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                **_problems(401, 403, 405, 503),
            },
        }
    },
}


def _operation(endpoint: str) -> dict[str, Any]:
    key = endpoint.replace("health_v1.", "health.")
    if key in OPERATIONS:
        return OPERATIONS[key]
    # a route of a module this file does not know: documented generically rather than hidden
    return {
        "get": {
            "summary": f"{endpoint} (see docs/operations.md)",
            "responses": {"200": {"description": "OK"}, **_problems(405)},
        }
    }


def _contract_schemas(contracts: Contracts) -> dict[str, Any]:
    """The components that follow the published contract: a field added to a mart's YAML shows
    up here after the publish that carries it."""
    profiles, products = contracts.get(PROFILES), contracts.get(PRODUCTS)
    catalog = [c for c in (products.served if products is not None else ()) if c.name != "product_id"]
    return {
        "Profile": object_schema(
            profiles,
            "A customer profile (DESIGN.md mart contract; models/marts/_marts.yml). "
            "With `fields`, only customer_id and those fields.",
        ),
        "ProfileField": {"type": "string", "enum": list(field_names(profiles)) or ["customer_id"]},
        "Recommendations": {
            "type": "object",
            "required": ["customer_id", "recommendations"],
            "additionalProperties": False,
            "properties": {
                "customer_id": {"type": "string"},
                "recommendations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["rank", "product_id", "score", "reason", *[c.name for c in catalog]],
                        "properties": {
                            "rank": {"type": "integer", "minimum": 1},
                            "product_id": {"type": "string"},
                            "score": _nullable("number"),
                            "reason": _nullable("string"),
                            **{c.name: {**column_schema(c), "type": [_KINDS[c.kind]["type"], "null"]} for c in catalog},
                        },
                    },
                },
            },
        },
        "MergeFields": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Flat strings for merge tags; see docs/api.md 'Merge fields'.",
            "required": list(field_names(profiles)),
        },
    }


def build_openapi(app: Flask, settings: Settings, contracts: Contracts) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        ops = {}
        for method, op in _operation(rule.endpoint).items():
            if method.upper() in (rule.methods or ()):
                ops[method] = {**op, "operationId": rule.endpoint.replace(".", "_") + "_" + method}
        paths.setdefault(openapi_path(rule.rule), {}).update(ops)
    if settings.metrics_access == "key":
        paths["/metrics"]["get"] = {
            **paths["/metrics"]["get"],
            "security": _secured(ADMIN),
            "responses": {**paths["/metrics"]["get"]["responses"], **_problems(401, 403, 429)},
        }
    schemas = {**SCHEMAS, **_OAUTH_SCHEMAS, **_contract_schemas(contracts)}
    batch = {**schemas["BatchRequest"]}
    batch["properties"] = {
        **batch["properties"],
        "customer_ids": {**batch["properties"]["customer_ids"], "maxItems": settings.batch_max_ids},
    }
    schemas["BatchRequest"] = batch
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sendtime API",
            "version": "1.0.0",
            "description": "Fresh customer profiles for email personalization. Errors are RFC 9457 "
            "problems with stable `type` URIs; see docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`sendtime keys create`) or an OAuth 2.0 access token.",
                },
                "oauth2": {
                    "type": "oauth2",
                    "description": "Client credentials (`sendtime clients create`).",
                    "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPE_DESCRIPTIONS}},
                },
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "An OAuth client's client_id and client_secret (the token endpoint only).",
                },
            },
        },
    }


_OAUTH_SCHEMAS: dict[str, Any] = {
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {
                "type": "string",
                "description": "Space-separated scopes, within the client's; default all of them.",
            },
            "client_id": {"type": "string", "description": "With client_secret, when not sent by HTTP Basic."},
            "client_secret": {"type": "string"},
        },
    },
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "minimum": 1},
            "scope": {"type": "string"},
        },
    },
    "OAuthError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "string",
                "enum": [
                    "invalid_request",
                    "invalid_client",
                    "invalid_grant",
                    "unauthorized_client",
                    "unsupported_grant_type",
                    "invalid_scope",
                ],
            },
            "error_description": {"type": "string"},
        },
    },
}


class OpenApiDocument:
    """The document of one app, rendered again when the published contract changes."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self._cached: tuple[str, bytes] | None = None

    def render(self, contracts: Contracts) -> bytes:
        key = checksum(contracts)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, orjson.dumps(build_openapi(self.app, self.settings, contracts)))
        return self._cached[1]
