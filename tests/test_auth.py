"""Keys, scopes, revocation and the IP allowlist, over HTTP against the real server."""

from __future__ import annotations

import pytest
import requests

from pipeline.config import load_settings
from serving.app import create_app
from serving.keys import create_key
from tests.helpers.api_server import ApiServer, seed_store

# the endpoints that answer without a key; every other route of the app is a data endpoint
OPEN = {
    "/health",
    "/ready",
    "/openapi.json",
    "/api/v1/health",
    "/api/v1/ready",
    "/api/v1/openapi.json",
    "/metrics",
    "/status",
    "/oauth/token",
}
SAMPLE_BODY = {
    "/api/v1/customers/batch": {"customer_ids": ["c1"]},
    "/api/v1/customers/lookup": {"email": "ada.lovelace@example.com"},
    "/api/v1/events": [
        {"event_id": "auth-e1", "event_type": "login", "occurred_at": "2026-11-01T00:00:00Z", "customer_id": "c1"}
    ],
    "/api/v1/webhooks/sendgrid": [],
}
# Mailchimp Transactional posts a form
FORM_BODY = {"/api/v1/webhooks/mailchimp": {"mandrill_events": "[]"}}
# the routes that write events; every other data route reads profiles
WRITES = ("/api/v1/events", "/api/v1/webhooks/sendgrid", "/api/v1/webhooks/mailchimp")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("auth-home")
    settings = load_settings(home, environ={})
    keys = seed_store(settings)
    # these tests send bad keys on purpose: no failed-auth limit here (tests/test_hardening.py has one)
    with ApiServer(home, workers=2, env={"SENDTIME_AUTH_FAILURES_BURST": "100000"}) as server:
        yield server, keys, settings


def data_routes(settings) -> list[tuple[str, str]]:
    """(method, concrete path) for every route in the app's URL map that is not open."""
    app = create_app(settings)
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule in OPEN:
            continue
        path = rule.rule.replace("<customer_id:customer_id>", "c1")
        assert "<" not in path, f"add a sample value for {rule.rule}"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def _call(server, method: str, path: str, headers: dict[str, str]) -> requests.Response:
    if path in FORM_BODY:
        return requests.request(method, server.url + path, headers=headers, data=FORM_BODY[path], timeout=30)
    return requests.request(method, server.url + path, headers=headers, json=SAMPLE_BODY.get(path), timeout=30)


def test_the_url_map_has_the_data_endpoints(api):
    _, _, settings = api
    routes = data_routes(settings)
    assert ("GET", "/api/v1/customers/c1") in routes and ("POST", "/api/v1/events") in routes
    # profiles, batch, lookup, recommendations, merge fields, send time; the collector, two webhooks
    assert len(routes) == 9


def test_every_data_endpoint_needs_a_key(api):
    server, keys, settings = api
    for method, path in data_routes(settings):
        for headers in (
            {},
            {"Authorization": "Bearer st_not-a-real-key"},
            {"Authorization": "Basic dXNlcjpwdw=="},
            {"Authorization": "Bearer"},
        ):
            r = _call(server, method, path, headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["Content-Type"] == "application/problem+json"
            assert r.json()["type"] == "https://sendtime.dev/problems/unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "X-Sendtime-Version" in r.headers


def test_scopes(api):
    server, keys, settings = api
    for method, path in data_routes(settings):
        needs = "events:write" if path in WRITES else "profiles:read"
        wrong = "profiles:read" if needs == "events:write" else "events:write"
        r = _call(server, method, path, {"Authorization": f"Bearer {keys[wrong]}"})
        assert r.status_code == 403 and r.json()["type"] == "https://sendtime.dev/problems/forbidden", (path, r.text)
        assert needs in r.json()["detail"]
        for scope in (needs, "admin"):  # admin satisfies every scope
            ok = _call(server, method, path, {"Authorization": f"Bearer {keys[scope]}"})
            assert ok.status_code == 200, (method, path, scope, ok.text)


def test_revocation_takes_effect_at_once(api, cli):
    server, _, settings = api
    cli.home = settings.home
    cli.env["SENDTIME_HOME"] = str(settings.home)
    created = cli.json("keys", "create", "--name", "to-revoke", "--scopes", "profiles:read")
    key = created["key"]
    assert server.get("/api/v1/customers/c1", key).status_code == 200
    cli("keys", "revoke", "to-revoke")
    for _ in range(3):  # every worker refuses it on the very next request
        r = server.get("/api/v1/customers/c1", key)
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_ip_allowlist(tmp_path):
    settings = load_settings(tmp_path, environ={})
    keys = seed_store(settings)
    with ApiServer(tmp_path, env={"SENDTIME_IP_ALLOWLIST": "10.0.0.0/8,192.168.1.0/24"}) as server:
        r = server.get("/api/v1/customers/c1", keys["admin"])
        assert r.status_code == 403 and r.json()["type"] == "https://sendtime.dev/problems/ip-not-allowed"
        assert server.get("/health").status_code == 200  # probes stay open
        assert server.get("/ready").status_code == 200
    with ApiServer(tmp_path, env={"SENDTIME_IP_ALLOWLIST": "127.0.0.0/8"}) as server:
        assert server.get("/api/v1/customers/c1", keys["admin"]).status_code == 200


def test_a_key_created_while_serving_works_at_once(api):
    server, _, settings = api
    key, record = create_key(settings, "late-key", ["profiles:read"])
    assert server.get("/api/v1/customers/c1", key).status_code == 200
