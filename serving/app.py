"""The Flask app factory: blueprints, auth, rate limits, problems, request logs, caching headers.

Every request passes through `_begin` (request id, IP allowlist, key, scope, rate limit) and
`_finish` (version and request-id headers, one JSON log line). Every route needs a key with the
scope its view declares unless serving/access.py lists it as open; an undeclared one needs admin.
Every error, including an unexpected exception, leaves as an `application/problem+json` response.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from pipeline.config import Settings, load_settings
from pipeline.errors import SendtimeError
from serving import access, metrics, oauth, status, webhook_signatures
from serving.api import events, health, profiles, send_time, webhooks
from serving.auth import authenticate_prefetching, require_scope
from serving.fastpath import ProfileFastPath
from serving.metrics import route_template
from serving.openapi import OpenApiDocument
from serving.problems import Problem, problem_response
from serving.ratelimit import forget_idle, per_worker, retry_after_header
from serving.reader import StoreReader, StoreUnavailable
from serving.requestlog import log_request, write_line
from serving.state import ApiState

API_PREFIX = "/api/v1"
VERSION_HEADER = "X-Sendtime-Version"
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
}
# the endpoint whose profile is read together with the key (see serving.auth.authenticate)
_PREFETCH = "profiles.get_customer"
_TOKEN_ENDPOINT = "oauth.token"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, static_folder=None)  # no /static route: every route is documented
    app.url_map.converters["customer_id"] = CustomerIdConverter
    # caps every body (the collector's is the largest allowed); a bigger one is a 413 problem
    app.config["MAX_CONTENT_LENGTH"] = settings.collector_max_body_bytes
    api = ApiState(
        settings=settings,
        reader=StoreReader(settings),
        limiter=per_worker(settings.rate_limit_per_second, settings.rate_limit_burst, settings.workers),
        cache_control=f"private, max-age={settings.cache_max_age}",
        auth_failures=per_worker(settings.auth_failures_per_second, settings.auth_failures_burst, settings.workers),
    )
    app.extensions["sendtime"] = api

    app.register_blueprint(profiles.bp, url_prefix=API_PREFIX)
    app.register_blueprint(events.bp, url_prefix=API_PREFIX)
    app.register_blueprint(send_time.bp, url_prefix=API_PREFIX)
    app.register_blueprint(webhooks.bp, url_prefix=API_PREFIX)
    webhook_signatures.check_settings(settings)  # a bad signing key stops the start, with its reason
    app.register_blueprint(health.bp)
    app.register_blueprint(health.bp, url_prefix=API_PREFIX, name="health_v1")
    oauth.init_app(app)  # POST /oauth/token (client credentials)
    observe = _observability(app)
    _install_hooks(app, api)
    _install_error_handlers(app)
    # built from the app's own URL map, so the document and the routes cannot drift apart, and from
    # the published contract, so it shows the fields the API serves
    app.extensions["sendtime.openapi"] = OpenApiDocument(app, settings)
    # the hottest request skips Flask's machinery (serving/fastpath.py); all else goes through Flask
    rule = next(r.rule for r in app.url_map.iter_rules() if r.endpoint == _PREFETCH)
    scope = access.policy(app, settings)[_PREFETCH] or access.FAIL_CLOSED
    app.wsgi_app = ProfileFastPath(app.wsgi_app, api, route_template(rule), scope, _REQUEST_ID, observe)
    return app


class CustomerIdConverter(BaseConverter):
    """Any path segment except the two action names, so `/customers/batch` is only the batch
    endpoint (GET on it is a 405, not the profile of a customer called "batch"); such a customer is
    still reachable through POST /customers/batch."""

    regex = r"(?!(?:batch|lookup)$)[^/]+"
    part_isolating = True  # one path segment: keeps Werkzeug's fast state-machine matching


def _observability(app: Flask) -> Callable[[str, str, int, float], None]:
    """/metrics and the request metrics (serving.metrics), /status (serving.status). Returns the
    public hook that counts a request answered outside Flask (the fast path) in the same metrics."""
    metrics.init_app(app)
    app.register_blueprint(status.bp)
    return metrics.observe_request


def _install_hooks(app: Flask, api: ApiState) -> None:
    networks = tuple(ipaddress.ip_network(c, strict=False) for c in api.settings.ip_allowlist)
    reader, limiter, failures = api.reader, api.limiter, api.auth_failures
    probes, fail_closed = access.PROBES, access.FAIL_CLOSED
    # endpoint -> required scope or None (open): serving/access.py's policy, taken at the first
    # request, once every route exists; an endpoint it does not know needs admin
    scopes: dict[str | None, str | None] = {}
    perf_counter = time.perf_counter
    # the hot path reads the WSGI environ and the real request/g objects directly: every
    # LocalProxy or EnvironHeaders lookup is a few hundred nanoseconds, on every request

    @app.before_request
    def _begin() -> None:
        req, ctx = request._get_current_object(), g._get_current_object()
        ctx.t0 = perf_counter()
        environ = req.environ
        rid = environ.get("HTTP_X_REQUEST_ID")
        ctx.request_id = rid if rid and _REQUEST_ID.match(rid) else secrets.token_hex(8)
        rule = req.url_rule
        endpoint = rule.endpoint if rule is not None else None
        if networks and endpoint not in probes and not _allowed(req.remote_addr, networks):
            raise Problem("ip-not-allowed", "this client address may not call the API")
        if not scopes:
            scopes.update(access.policy(app, api.settings))
        scope = scopes.get(endpoint, fail_closed)
        if scope is None and endpoint != _TOKEN_ENDPOINT:
            return
        address = req.remote_addr or "-"
        blocked = failures.waiting(address)
        if blocked:  # too many failed authentications from this address: no credential is checked now
            raise Problem(
                "rate-limited",
                "too many failed authentications from this address",
                {"Retry-After": retry_after_header(blocked)},
            )
        if scope is None:
            return  # the token endpoint authenticates the client itself (serving/oauth.py)
        prefetch = req.view_args.get("customer_id") if endpoint == _PREFETCH else None
        caller, why, ctx.profile = authenticate_prefetching(reader, environ.get("HTTP_AUTHORIZATION"), prefetch)
        if caller is None:
            if environ.get("HTTP_AUTHORIZATION"):  # a credential that failed (none sent is not a guess)
                _count_failure(address)
            raise Problem("unauthorized", why, {"WWW-Authenticate": 'Bearer realm="sendtime"'})
        ctx.key = caller.name
        require_scope(caller, scope)
        wait = limiter.acquire(caller.name)
        if wait:
            raise Problem(
                "rate-limited", f"over the rate limit of {caller.name!r}", {"Retry-After": retry_after_header(wait)}
            )

    def _count_failure(address: str) -> None:
        forget_idle(failures)
        failures.acquire(address)

    @app.after_request
    def _finish(response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()
        if getattr(ctx, "auth_failed", False):  # the token endpoint refused a client's credentials
            _count_failure(req.remote_addr or "-")
        version = getattr(ctx, "version", None)
        if version is None:  # not read by a data endpoint (an error, an open endpoint): read it now
            try:
                version = reader.version()
            except StoreUnavailable:
                version = None
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"  # every answer: never sniffed as another type
        if version is not None:
            headers[VERSION_HEADER] = str(version)
        request_id = getattr(ctx, "request_id", None) or secrets.token_hex(8)
        headers[REQUEST_ID_HEADER] = request_id
        rule = req.url_rule
        now = perf_counter()
        log_request(
            request_id=request_id,
            key=getattr(ctx, "key", None),
            method=req.method,
            route=route_template(rule.rule) if rule is not None else None,
            status=response.status_code,
            latency_ms=(now - getattr(ctx, "t0", now)) * 1000.0,
            version=version,
        )
        return response


def _allowed(address: str | None, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.slug, exc.detail, exc.headers)

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> Response:
        write_line(
            "warning", "sendtime.api", "online store unavailable", error=str(exc), request_id=g.get("request_id")
        )
        return problem_response("unavailable", "the online store cannot be read; retry shortly", {"Retry-After": "5"})

    @app.errorhandler(SendtimeError)
    def _pipeline(exc: SendtimeError) -> Response:
        # the collector could not land events (lake not writable, ...): nothing was claimed, retry
        write_line(
            "error",
            "sendtime.api",
            "collector could not ingest",
            error=type(exc).__name__,
            request_id=g.get("request_id"),
        )
        return problem_response(
            "unavailable", "the events could not be stored; retry the same request", {"Retry-After": "5"}
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        slug = _HTTP_SLUGS.get(code, "bad-request" if code < 500 else "internal-error")
        headers = {}
        if code == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        detail = {
            404: "no such endpoint: see /openapi.json",
            405: f"{request.method} is not allowed here",
            413: f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(code)
        return problem_response(slug, detail or (exc.description or exc.name), headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # the exception type and route only: a message could hold request data
        rule = request.url_rule
        write_line(
            "error",
            "sendtime.api",
            "unexpected error",
            error=type(exc).__name__,
            route=route_template(rule.rule) if rule is not None else None,
            request_id=g.get("request_id"),
        )
        return problem_response("internal-error", "an unexpected error occurred; it was logged")
