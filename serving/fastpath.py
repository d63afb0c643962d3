"""The hot request, answered below Flask: `GET /api/v1/customers/<id>` (no query string) -> 200/304.

An email send calls this endpoint 2-3 times per recipient, so its cost per request is the API's
throughput. Flask's request machinery (contexts, hooks, `g`, Werkzeug header objects) costs more
CPU than the work itself (one SQL statement, a stored body), so this WSGI middleware answers the
happy path directly, with the same building blocks as the Flask view: `authenticate_prefetching`
(key, version and profile in one statement), the same rate limiter, ETag rule, headers, JSON log
line and request metrics.

Anything else goes to Flask unchanged, which answers it through the ordinary path: another
method or route, a query string (`?fields=`), a non-ASCII id, an IP allowlist, a missing, bad or
revoked key (or OAuth token), a missing scope, the rate limit, an address over its failed-auth
limit, an unknown customer, a store error. Those answers
(problems, 401/403/404/429/503) therefore exist in one implementation only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from serving.auth import authenticate_prefetching
from serving.http import etag_matches
from serving.reader import StoreUnavailable
from serving.requestlog import log_request
from serving.state import ApiState

PREFIX = "/api/v1/customers/"
RESERVED = frozenset({"batch", "lookup"})


class ProfileFastPath:
    def __init__(
        self,
        flask_wsgi: Callable,
        api: ApiState,
        route: str,
        scope: str,
        request_id: Any,
        observe: Callable[[str, str, int, float], None] | None,
    ) -> None:
        self.flask_wsgi = flask_wsgi
        self.api = api
        self.route = route  # the route template, as the ordinary path logs and counts it
        self.scope = scope  # the scope the Flask view declares (serving/access.py)
        self.valid_request_id = request_id  # compiled pattern of acceptable client request ids
        self.observe = observe  # serving.metrics.observe_request: the request counter and histogram
        self.enabled = not api.settings.ip_allowlist

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            not self.enabled
            or environ.get("REQUEST_METHOD") != "GET"
            or environ.get("QUERY_STRING")
            or not path.startswith(PREFIX)
        ):
            return self.flask_wsgi(environ, start_response)
        customer_id = path[len(PREFIX) :]
        if not customer_id or "/" in customer_id or customer_id in RESERVED or not customer_id.isascii():
            return self.flask_wsgi(environ, start_response)
        t0 = time.perf_counter()
        api = self.api
        if api.auth_failures is not None and api.auth_failures.waiting(environ.get("REMOTE_ADDR") or "-"):
            return self.flask_wsgi(environ, start_response)  # an address over its failed-auth limit: Flask's 429
        try:
            caller, _why, profile = authenticate_prefetching(api.reader, environ.get("HTTP_AUTHORIZATION"), customer_id)
        except StoreUnavailable:
            return self.flask_wsgi(environ, start_response)
        if caller is None or not caller.allows(self.scope) or profile is None or profile[1] is None:
            return self.flask_wsgi(environ, start_response)
        if api.limiter.acquire(caller.name):  # denied: no token was taken, Flask answers the 429
            return self.flask_wsgi(environ, start_response)
        version, body, etag = profile
        rid = environ.get("HTTP_X_REQUEST_ID")
        request_id = rid if rid and self.valid_request_id.match(rid) else secrets.token_hex(8)
        quoted = f'"{etag}"'
        headers = [
            ("Content-Type", "application/json"),
            ("ETag", quoted),
            ("Cache-Control", api.cache_control),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Sendtime-Version", str(version)),
            ("X-Request-Id", request_id),
        ]
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm and etag_matches(inm, etag):
            status, payload = 304, b""
            start_response("304 NOT MODIFIED", headers)
        else:
            status, payload = 200, body.encode()
            headers.append(("Content-Length", str(len(payload))))
            start_response("200 OK", headers)
        seconds = time.perf_counter() - t0
        log_request(
            request_id=request_id,
            key=caller.name,
            method="GET",
            route=self.route,
            status=status,
            latency_ms=seconds * 1000.0,
            version=version,
        )
        if self.observe is not None:
            self.observe(self.route, "GET", status, seconds)
        return [payload]
