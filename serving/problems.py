"""RFC 9457 problem details: every error the API returns is one of these.

The `type` URIs are stable (clients may switch on them); they are documented in docs/api.md and
in the OpenAPI document. Nothing in a problem echoes a secret (key) or an email.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from flask import Response, g

PROBLEM_BASE = "https://sendtime.dev/problems/"
PROBLEM_MIMETYPE = "application/problem+json"

# slug -> (status, title). Titles never change for a type; `detail` says what exactly was wrong.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "Bad request"),
    "invalid-json": (400, "Request body is not valid JSON"),
    "invalid-parameter": (400, "Invalid parameter"),
    "unknown-field": (400, "Unknown profile field"),
    "too-many-items": (400, "Too many items in one request"),
    "unauthorized": (401, "Missing or invalid API key"),
    "invalid-signature": (401, "Missing or invalid webhook signature"),
    "forbidden": (403, "API key lacks the required scope"),
    "ip-not-allowed": (403, "Client address is not in the allowlist"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "rate-limited": (429, "Rate limit exceeded"),
    "internal-error": (500, "Internal error"),
    "not-ready": (503, "No fresh published state"),
    "unavailable": (503, "Service unavailable"),
}


@dataclass
class Problem(Exception):
    """Raise anywhere in a request; the app's error handler turns it into a response."""

    slug: str
    detail: str
    headers: dict[str, str] | None = None

    @property
    def status(self) -> int:
        return PROBLEM_TYPES[self.slug][0]


def problem_response(slug: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    status, title = PROBLEM_TYPES[slug]
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        # the request id, not the path: a path may carry whatever a client typed
        "instance": "urn:sendtime:request:" + g.get("request_id", "-"),
    }
    response = Response(orjson.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    if headers:
        response.headers.update(headers)
    return response
