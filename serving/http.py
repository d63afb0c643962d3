"""Request and response helpers shared by the blueprints: JSON bodies in, JSON and cacheable
answers out (ETag, Cache-Control, 304), and the published version a request read."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from flask import Response, current_app, g, request

from serving.problems import Problem
from serving.state import state

JSON = "application/json"


def json_body() -> Any:
    """The parsed JSON body: 415 for another content type, 400 when it is not JSON."""
    if request.mimetype != JSON:
        raise Problem(
            "unsupported-media-type", f"send the body as {JSON} (got {request.mimetype or 'no content type'})"
        )
    data = _body_bytes()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Problem("invalid-json", f"the body is not valid JSON: {exc.msg} at position {exc.pos}") from None


def raw_body() -> bytes:
    """The body exactly as sent (what a webhook signature covers), with json_body's size limit."""
    return _body_bytes()


def _body_bytes() -> bytes:
    """The body, at most MAX_CONTENT_LENGTH bytes: a larger one is a 413, with or without a
    Content-Length (Werkzeug would silently cut a chunked body at the limit)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)  # Content-Length checked by Werkzeug (413)
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise Problem("payload-too-large", f"the body is larger than {limit} bytes")
    return data


def json_response(body: bytes | str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=JSON)


def etag_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    if header == f'"{etag}"':
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == etag:
            return True
    return False


def cacheable(body: bytes | str, etag: str) -> Response:
    """A GET answer with a strong ETag and Cache-Control; 304 when the client has it already."""
    quoted = f'"{etag}"'
    headers = [("ETag", quoted), ("Cache-Control", state().cache_control)]
    inm = request.environ.get("HTTP_IF_NONE_MATCH")
    if inm and etag_matches(inm, etag):
        return Response(status=304, headers=headers)
    return Response(body, headers=headers, mimetype=JSON)


def set_version(version: int) -> None:
    g.version = version
