"""The API review's hardening list (issue "Privacy and access"), over HTTP against a real gunicorn:
a batch costs one rate-limit token per id, failed authentication is limited per client address,
no query parameter causes a 500, every answer says nosniff, a 404 does not echo the id, /metrics
can require an admin key, the status page redacts names as well as emails in linear time."""

from __future__ import annotations

import pytest
import requests

from pipeline.config import load_settings
from pipeline.redact import redact
from tests.helpers.api_server import ApiServer, seed_store

NASTY = [
    "²",
    "٣",
    "１",
    "Ⅻ",
    "3.0",
    "-1",
    "0",
    "1e2",
    " 5",
    "5 ",
    "99999999999999999999",
    "",
    "%00",
    "\u0000",
    "\u202e10",
    "𝟗",
    "१०",
    "ß",
    "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
    "a" * 5000,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    """Default limits, /metrics behind an admin key."""
    home = tmp_path_factory.mktemp("hardening-home")
    keys = seed_store(load_settings(home, environ={}))
    with ApiServer(home, workers=1, env={"SENDTIME_METRICS_ACCESS": "key"}) as server:
        yield server, keys


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory):
    """Small limits: 30 tokens of burst per key at 0.5 per second; 3 failed authentications per address."""
    home = tmp_path_factory.mktemp("strict-home")
    keys = seed_store(load_settings(home, environ={}))
    env = {
        "SENDTIME_RATE_LIMIT_PER_SECOND": "0.5",
        "SENDTIME_RATE_LIMIT_BURST": "30",
        "SENDTIME_AUTH_FAILURES_PER_SECOND": "0.01",
        "SENDTIME_AUTH_FAILURES_BURST": "3",
    }
    with ApiServer(home, workers=1, env=env) as server:
        yield server, keys


def test_no_query_parameter_causes_a_500(api):
    server, keys = api
    key = keys["admin"]
    for value in NASTY:
        for path in (
            "/api/v1/customers/c1",
            "/api/v1/customers/c1/recommendations",
            "/api/v1/customers/c1/merge-fields",
            "/status",
            "/ready",
            "/openapi.json",
        ):
            for name in ("limit", "fields", "after", "x"):
                response = requests.get(
                    server.url + path, params={name: value}, headers={"Authorization": f"Bearer {key}"}, timeout=10
                )
                assert response.status_code < 500, (path, name, value, response.text)
                if "X-Request-Id" in response.headers:  # the app's answer (gunicorn refuses a 5 KB request line itself)
                    assert response.headers.get("X-Content-Type-Options") == "nosniff", (path, name)
    bad = server.get("/api/v1/customers/c1/recommendations?limit=²", key)
    assert bad.status_code == 400 and bad.json()["type"].endswith("/invalid-parameter")
    assert server.get("/api/v1/customers/c1/recommendations?limit=2", key).status_code == 200


def test_every_answer_says_nosniff_and_404s_do_not_echo_the_id(api):
    server, keys = api
    key = keys["profiles:read"]
    responses = [
        server.get("/api/v1/customers/c1", key),  # the fast path
        server.get("/health"),
        server.get("/openapi.json"),
        server.get("/nowhere"),
        server.get("/api/v1/customers/c1"),
        server.post("/api/v1/customers/batch", key, data="{"),
    ]
    for response in responses:
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.url
    secret_id = "someone-private-4242"
    for path in (
        f"/api/v1/customers/{secret_id}",
        f"/api/v1/customers/{secret_id}/recommendations",
        f"/api/v1/customers/{secret_id}/merge-fields",
    ):
        response = server.get(path, key)
        assert response.status_code == 404 and secret_id not in response.text


def test_a_batch_of_n_ids_costs_n_tokens(strict):
    server, keys = strict
    key = keys["profiles:read"]  # 30 tokens of burst, 0.5 per second
    first = server.post("/api/v1/customers/batch", key, json={"customer_ids": [f"id{i}" for i in range(25)]})
    assert first.status_code == 200
    second = server.post("/api/v1/customers/batch", key, json={"customer_ids": [f"id{i}" for i in range(10)]})
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    assert second.json()["type"].endswith("/rate-limited")


def test_failed_authentication_is_limited_per_address(strict):
    server, keys = strict
    for _ in range(3):
        assert server.get("/api/v1/customers/c1", "st_not-a-key").status_code == 401
    assert server.get("/api/v1/customers/c1", "st_not-a-key").status_code == 429
    # the address is refused whatever it sends until its bucket refills, the token endpoint too
    blocked = server.get("/api/v1/customers/c1", keys["events:write"])
    assert blocked.status_code == 429 and blocked.headers["Retry-After"]
    assert requests.post(server.url + "/oauth/token", data={"grant_type": "client_credentials"}).status_code == 429
    assert server.get("/health").status_code == 200  # probes stay open


def test_metrics_can_require_an_admin_key(api):
    server, keys = api
    assert server.get("/metrics").status_code == 401
    assert server.get("/metrics", keys["profiles:read"]).status_code == 403
    ok = server.get("/metrics", keys["admin"])
    assert ok.status_code == 200 and "sendtime" in ok.text
    assert server.get("/openapi.json").json()["paths"]["/metrics"]["get"]["security"][0] == {"bearerAuth": []}


def test_status_page_redaction_takes_names_and_emails_in_linear_time():
    from serving.status import redact as page_redact

    message = (
        "Conversion Error: Could not convert string 'Ada Lovelace' to INT32 for "
        "ada.lovelace@example.com in {'first_name': 'Grace', \"last_name\": \"Hopper\"} of column \"email\""
    )
    shown = page_redact(message, 1000)
    for secret in ("Ada", "Lovelace", "ada.lovelace@example.com", "Grace", "Hopper"):
        assert secret not in shown
    assert 'column "email"' in shown and "INT32" in shown
    # a long text without any quote or @ (the old regex was quadratic on it) is handled in one pass
    long_text = "x" * 200_000 + " name"
    assert redact(long_text) == long_text
    assert redact("'" + "y" * 200_000) == "'[redacted]"
