"""Who may call which endpoint: every route is closed unless it is declared open here.

* A data endpoint declares the scope its key needs on its view, with `@requires(scope)`
  (`admin` satisfies every scope).
* The endpoints that answer without a key are listed in `OPEN`, in this file and nowhere else,
  each with the reason and, where a setting decides, the condition.
* An endpoint with neither (a route added without a decision) needs an `admin` key: it fails
  closed. tests/test_access.py walks the URL map so that every endpoint is one or the other.

`policy()` is what the app's before_request hook (serving/app.py) enforces; `PROBES` are the
endpoints that stay reachable from outside `ip_allowlist`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from pipeline.config import Settings
from serving.auth import ADMIN

FAIL_CLOSED = ADMIN  # the scope of an endpoint that declares none and is not listed as open


def _always(settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Open:
    """Why an endpoint answers without a key, and when (`when(settings)`; always by default)."""

    why: str
    when: Callable[[Settings], bool] = _always


_PROBE = "a probe: load balancers and orchestrators call it without a key"
_DOC = "the API's own description (OpenAPI), public by design"

OPEN: dict[str, Open] = {
    "health.health": Open(_PROBE),
    "health_v1.health": Open(_PROBE),
    "health.ready": Open(_PROBE),
    "health_v1.ready": Open(_PROBE),
    "health.openapi": Open(_DOC),
    "health_v1.openapi": Open(_DOC),
    "metrics": Open(
        "Prometheus scrapes it without a key; counts and durations only, never customer "
        "data (restrict it with ip_allowlist or the network: docs/operations.md), when "
        "metrics_access = 'open' (else admin, like an undeclared endpoint)",
        lambda settings: settings.metrics_access == "open",
    ),
    "oauth.token": Open(
        "the OAuth 2.0 token endpoint: a client authenticates there with its own "
        "credentials (RFC 6749 section 4.4; failures are rate limited per address)"
    ),
    "status.status_page": Open(
        "the operator's page, when status_page_access = 'open' (else its declared scope, admin, applies)",
        lambda settings: settings.status_page_access == "open",
    ),
    # the email platforms sign their webhooks; with the signing key set, the view checks the
    # signature instead of a key (401 when it is missing or wrong); else events:write applies
    "webhooks.sendgrid": Open(
        "SendGrid signs its Event Webhook (ECDSA): verified with sendgrid_webhook_public_key, when it is set",
        lambda settings: bool(settings.sendgrid_webhook_public_key),
    ),
    "webhooks.mailchimp": Open(
        "Mailchimp Transactional signs its webhook (HMAC-SHA1): verified with mailchimp_webhook_key, when it is set",
        lambda settings: bool(settings.mailchimp_webhook_key),
    ),
    "webhooks.mailchimp_check": Open(
        "Mailchimp checks the webhook URL with a HEAD request when it is "
        "added (before its key exists); it answers nothing"
    ),
}

# probes stay reachable from a load balancer outside the IP allowlist
PROBES = frozenset({"health.health", "health.ready", "health_v1.health", "health_v1.ready"})


def requires(scope: str) -> Callable:
    """Declares that a view needs an API key with `scope` (admin satisfies every scope)."""

    def mark(view: Callable) -> Callable:
        view.sendtime_scope = scope  # read by policy()
        return view

    return mark


def declared_scope(view: Callable) -> str | None:
    return getattr(view, "sendtime_scope", None)


def is_open(endpoint: str, settings: Settings) -> bool:
    rule = OPEN.get(endpoint)
    return rule is not None and rule.when(settings)


def policy(app: Flask, settings: Settings) -> dict[str | None, str | None]:
    """endpoint -> the scope a key needs, or None when the endpoint is open, for every endpoint of
    the app. The `None` endpoint (no route matched) is open: the router answers its 404 or 405."""
    out: dict[str | None, str | None] = {None: None}
    for endpoint, view in app.view_functions.items():
        out[endpoint] = None if is_open(endpoint, settings) else (declared_scope(view) or FAIL_CLOSED)
    return out


def undeclared(app: Flask) -> list[str]:
    """Endpoints neither listed in OPEN nor declaring a scope: they fail closed (admin only)."""
    return sorted(e for e, view in app.view_functions.items() if e not in OPEN and declared_scope(view) is None)
