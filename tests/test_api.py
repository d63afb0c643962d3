"""The profile endpoints over HTTP against `sendtime serve` (gunicorn, a real SQLite store)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.config import load_settings
from pipeline.store import current_version, engine_for
from tests.helpers.api_server import ApiServer, profile_row, publish_rows, seed_store

PROBLEM = "application/problem+json"
P = "https://sendtime.dev/problems/"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("api-home")
    settings = load_settings(home, environ={})
    keys = seed_store(settings)
    with ApiServer(home, workers=2) as server:
        yield server, keys["profiles:read"], settings


def _version(settings) -> str:
    engine = engine_for(settings)
    try:
        return str(current_version(engine)["version"])
    finally:
        engine.dispose()


def _problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM
    body = response.json()
    assert body["type"] == P + slug and body["status"] == status
    assert body["title"] and body["detail"] and body["instance"].startswith("urn:sendtime:request:")
    return body


def test_full_profile_is_the_published_body(api):
    server, key, settings = api
    r = server.get("/api/v1/customers/c1", key)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert '"lifetime_value":1234.50' in r.text  # money keeps 2 decimals on the wire
    body = r.json()
    assert list(body) == [
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "country",
        "locale",
        "timezone",
        "marketing_consent",
        "first_seen_at",
        "last_seen_at",
        "orders_count",
        "lifetime_value",
        "last_order_at",
        "lifecycle_stage",
        "recently_viewed",
        "cart",
        "top_categories",
        "recommendations",
        "email_status",
        "last_email_open_at",
        "last_email_click_at",
        "email_opens_30d",
        "email_clicks_30d",
        "best_send_hour",
        "best_send_hour_confidence",
    ]
    assert body["first_seen_at"] == "2026-01-02T03:04:05Z" and body["last_seen_at"] == "2026-11-01T12:00:00.250000Z"
    assert body["recently_viewed"] == ["P1", "P2"] and body["orders_count"] == 3
    empty = server.get("/api/v1/customers/c3", key)
    assert empty.json()["cart"] == [] and '"cart":[]' in empty.text
    assert r.headers["X-Sendtime-Version"] == _version(settings)
    assert r.headers["Cache-Control"] == "private, max-age=300"
    assert r.headers["ETag"].startswith('"') and r.headers["ETag"].endswith('"')


def test_fast_path_and_flask_path_answer_the_same(api):
    """GET /customers/{id} without a query string is answered below Flask (serving/fastpath.py);
    with any query string it goes through the Flask view: both must give the same answer."""
    server, key, _ = api
    fast = server.get("/api/v1/customers/c1", key, headers={"X-Request-Id": "same-1"})
    slow = server.get("/api/v1/customers/c1?unrelated=1", key, headers={"X-Request-Id": "same-1"})
    assert fast.status_code == slow.status_code == 200 and fast.content == slow.content
    for name in ("Content-Type", "ETag", "Cache-Control", "X-Sendtime-Version", "X-Request-Id", "Content-Length"):
        assert fast.headers[name] == slow.headers[name], name
    etag = {"If-None-Match": fast.headers["ETag"]}
    fast304 = server.get("/api/v1/customers/c1", key, headers=etag)
    slow304 = server.get("/api/v1/customers/c1?unrelated=1", key, headers=etag)
    assert fast304.status_code == slow304.status_code == 304
    for name in ("ETag", "Cache-Control", "X-Sendtime-Version"):
        assert fast304.headers[name] == slow304.headers[name], name
    # every other outcome of the route is Flask's: the same problems as with a query string
    assert server.get("/api/v1/customers/nobody", key).json()["type"].endswith("/not-found")
    assert server.get("/api/v1/customers/c1", "st_bad").status_code == 401
    assert server.get("/api/v1/customers/caf\u00e9", key).status_code == 404  # non-ASCII: Flask path
    metrics = server.get("/metrics").text
    assert 'sendtime_http_requests_total{method="GET",route="/api/v1/customers/<customer_id>",status="200"}' in metrics
    assert 'route="/api/v1/customers/<customer_id>",status="304"' in metrics


def test_projection_keeps_only_the_fields_asked(api):
    server, key, _ = api
    r = server.get("/api/v1/customers/c1?fields=lifetime_value,email,email", key)
    assert r.status_code == 200
    assert list(r.json()) == ["customer_id", "lifetime_value", "email"]
    assert '"lifetime_value":1234.50' in r.text
    full = server.get("/api/v1/customers/c1", key)
    assert r.headers["ETag"] != full.headers["ETag"]  # another representation, another validator


@pytest.mark.parametrize(
    "query, slug, needle",
    [
        ("fields=email,shoe_size", "unknown-field", "shoe_size"),
        ("fields=", "invalid-parameter", "fields"),
        ("fields=,,", "invalid-parameter", "fields"),
    ],
)
def test_bad_fields_are_400_naming_the_problem(api, query, slug, needle):
    server, key, _ = api
    body = _problem(server.get(f"/api/v1/customers/c1?{query}", key), 400, slug)
    assert needle in body["detail"]


def test_etag_and_304(api):
    server, key, settings = api
    first = server.get("/api/v1/customers/c1", key)
    etag = first.headers["ETag"]
    again = server.get("/api/v1/customers/c1", key, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag and again.headers["X-Sendtime-Version"] == _version(settings)
    assert again.headers["Cache-Control"] == "private, max-age=300"
    weak = server.get("/api/v1/customers/c1", key, headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    other = server.get("/api/v1/customers/c1", key, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.json()["customer_id"] == "c1"
    for path in ("/api/v1/customers/c1/recommendations", "/api/v1/customers/c1/merge-fields"):
        tagged = server.get(path, key)
        assert server.get(path, key, headers={"If-None-Match": tagged.headers["ETag"]}).status_code == 304


def test_unknown_customer_is_a_404_problem_with_version(api):
    server, key, settings = api
    r = server.get("/api/v1/customers/nobody", key)
    _problem(r, 404, "not-found")
    assert r.headers["X-Sendtime-Version"] == _version(settings)
    for path in ("/api/v1/customers/nobody/recommendations", "/api/v1/customers/nobody/merge-fields"):
        _problem(server.get(path, key), 404, "not-found")


def test_batch_found_and_not_found_in_request_order(api):
    server, key, _ = api
    r = server.post("/api/v1/customers/batch", key, json={"customer_ids": ["c2", "zz", "c1", "c2", "yy"]})
    assert r.status_code == 200
    body = r.json()
    assert [p["customer_id"] for p in body["found"]] == ["c2", "c1"]
    assert body["not_found"] == ["zz", "yy"]
    assert body["found"][1] == server.get("/api/v1/customers/c1", key).json()
    projected = server.post(
        "/api/v1/customers/batch", key, json={"customer_ids": ["c1"], "fields": ["lifetime_value", "cart"]}
    )
    assert projected.json() == {
        "found": [{"customer_id": "c1", "lifetime_value": 1234.5, "cart": ["P3"]}],
        "not_found": [],
    }
    assert '"lifetime_value":1234.50' in projected.text
    assert (
        server.post("/api/v1/customers/batch", key, json={"customer_ids": [f"id{i}" for i in range(1000)]}).json()[
            "not_found"
        ][999]
        == "id999"
    )


@pytest.mark.parametrize(
    "payload, slug",
    [
        ({"customer_ids": [f"id{i}" for i in range(1001)]}, "too-many-items"),
        ({"customer_ids": []}, "bad-request"),
        ({"customer_ids": "c1"}, "bad-request"),
        ({"customer_ids": ["c1", 7]}, "bad-request"),
        ({"customer_ids": ["c1"], "fields": ["nope"]}, "unknown-field"),
        ({"customer_ids": ["c1"], "fields": []}, "bad-request"),
        ({"customer_ids": ["c1"], "fields": None}, "bad-request"),
        ({"customer_ids": ["c1"], "extra": 1}, "bad-request"),
        ({"ids": ["c1"]}, "bad-request"),
        (["c1"], "bad-request"),
    ],
)
def test_batch_bad_input(api, payload, slug):
    server, key, _ = api
    _problem(server.post("/api/v1/customers/batch", key, json=payload), 400, slug)


def test_batch_bad_json_and_content_type(api):
    server, key, _ = api
    _problem(
        server.post(
            "/api/v1/customers/batch", key, data=b'{"customer_ids": [', headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid-json",
    )
    _problem(
        server.post(
            "/api/v1/customers/batch",
            key,
            data=b"customer_ids=c1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported-media-type",
    )


def test_lookup_by_email(api):
    server, key, _ = api
    r = server.post("/api/v1/customers/lookup", key, json={"email": "  Ada.Lovelace@Example.COM "})
    assert r.status_code == 200 and r.json()["customer_id"] == "c1"
    projected = server.post(
        "/api/v1/customers/lookup", key, json={"email": "grace.hopper@example.com", "fields": ["first_name"]}
    )
    assert projected.json() == {"customer_id": "c2", "first_name": "Grace"}
    missing = _problem(
        server.post("/api/v1/customers/lookup", key, json={"email": "nobody@example.org"}), 404, "not-found"
    )
    assert "nobody" not in missing["detail"]  # the email is never echoed
    for payload in ({"email": 42}, {"email": ""}, {"email": "no-at-sign"}, {}, {"email": "a@b.c", "x": 1}):
        _problem(server.post("/api/v1/customers/lookup", key, json=payload), 400, "bad-request")


def test_recommendations_with_catalog_details(api):
    server, key, _ = api
    r = server.get("/api/v1/customers/c1/recommendations", key)
    assert r.status_code == 200 and r.headers["ETag"] and r.headers["Cache-Control"] == "private, max-age=300"
    items = r.json()["recommendations"]
    assert [(i["rank"], i["product_id"]) for i in items] == [(1, "P1"), (2, "P2"), (3, "P4")]
    assert items[0] == {
        "rank": 1,
        "product_id": "P1",
        "score": 0.9,
        "reason": "association",
        "name": "Analytical Engine Manual",
        "category": "books",
        "price": 19.9,
        "currency": "USD",
        "url": "https://shop.example/p/P1",
        "image_url": "https://shop.example/i/P1.jpg",
        "in_stock": True,
    }
    assert '"price":19.90' in r.text and '"price":7.00' in r.text
    two = server.get("/api/v1/customers/c1/recommendations?limit=2", key).json()["recommendations"]
    assert [i["product_id"] for i in two] == ["P1", "P2"]
    assert server.get("/api/v1/customers/c3/recommendations", key).json() == {
        "customer_id": "c3",
        "recommendations": [],
    }


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "101", "2.5", ""])
def test_recommendations_bad_limit(api, limit):
    server, key, _ = api
    body = _problem(server.get(f"/api/v1/customers/c1/recommendations?limit={limit}", key), 400, "invalid-parameter")
    assert "limit" in body["detail"]


def test_merge_fields_are_flat_strings_with_fallbacks(api):
    server, key, _ = api
    full = server.get("/api/v1/customers/c1/merge-fields", key).json()
    assert all(isinstance(v, str) for v in full.values())
    assert full["first_name"] == "Ada" and full["lifetime_value"] == "1234.50" and full["orders_count"] == "3"
    assert full["marketing_consent"] == "true" and full["last_order_at"] == "2026-10-30T09:00:00Z"
    assert full["recently_viewed"] == "P1, P2" and full["recently_viewed_2"] == "P2"
    assert full["top_categories_1"] == "books"
    assert full["recommendation_1"] == "Analytical Engine Manual" and full["recommendation_1_price"] == "19.90"
    assert full["recommendation_3_url"] == "https://shop.example/p/P4"
    assert server.get("/api/v1/customers/c2/merge-fields", key).json()["marketing_consent"] == "false"
    sparse = server.get("/api/v1/customers/c3/merge-fields", key).json()
    assert sparse["first_name"] == "there"  # the configured fallback (settings.merge_field_fallbacks)
    assert sparse["locale"] == "en" and sparse["timezone"] == "UTC"
    assert sparse["last_name"] == "" and sparse["cart"] == "" and sparse["lifetime_value"] == "0.00"
    assert "recommendation_1" not in sparse


def test_unknown_routes_and_methods_are_problems(api):
    server, key, _ = api
    _problem(server.get("/api/v1/nothing-here", key), 404, "not-found")
    _problem(server.get("/nothing", None), 404, "not-found")
    r = server.get("/api/v1/customers/batch", key)
    _problem(r, 405, "method-not-allowed")
    assert "POST" in r.headers["Allow"]
    _problem(requests_delete(server, "/api/v1/customers/c1", key), 405, "method-not-allowed")


def requests_delete(server, path, key):
    import requests

    return requests.delete(server.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_request_id_is_accepted_or_made(api):
    server, key, _ = api
    r = server.get("/api/v1/customers/c1", key, headers={"X-Request-Id": "send-42.abc"})
    assert r.headers["X-Request-Id"] == "send-42.abc"
    bad = server.get("/api/v1/customers/c1", key, headers={"X-Request-Id": "has spaces and \u00e9"})
    assert bad.headers["X-Request-Id"] != "has spaces and \u00e9" and len(bad.headers["X-Request-Id"]) == 16


def test_open_endpoints(api):
    server, _, settings = api
    for prefix in ("", "/api/v1"):
        assert server.get(prefix + "/health").json() == {"status": "ok"}
        ready = server.get(prefix + "/ready")
        assert ready.status_code == 200 and ready.json()["version"] == int(_version(settings))
        assert server.get(prefix + "/openapi.json").json()["openapi"] == "3.1.0"


def test_docs_example_renders_templates_from_merge_fields(api):
    import subprocess
    import sys

    from tests.helpers.api_server import ROOT

    server, key, _ = api
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs/examples/render_merge_fields.py"),
            "--url",
            server.url,
            "--key",
            key,
            "--customer",
            "c1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.splitlines() == [
        "Hi Ada, picked for you: Analytical Engine Manual (19.90 USD)",
        "Hi Ada, still thinking about P3?",
    ]
    sparse = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs/examples/render_merge_fields.py"),
            "--url",
            server.url,
            "--key",
            key,
            "--customer",
            "c3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert sparse.stdout.splitlines() == ["Hi there,", "Hi there,"]


def test_the_server_holds_no_read_snapshot_between_requests(api):
    """A full WAL checkpoint (TRUNCATE) needs every reader to be outside a read transaction: it
    succeeds while the server is up and has just served every kind of read."""
    import sqlite3

    server, key, settings = api
    for path in (
        "/api/v1/customers/c1",
        "/api/v1/customers/c1?fields=email",
        "/api/v1/customers/c1/merge-fields",
        "/api/v1/customers/c1/recommendations",
        "/ready",
    ):
        assert server.get(path, key).status_code == 200
    assert server.post("/api/v1/customers/batch", key, json={"customer_ids": ["c1"]}).status_code == 200
    with sqlite3.connect(settings.home / "online.sqlite", timeout=5) as conn:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def test_new_publish_is_served_without_restart(api):
    """Runs last in this module: it publishes a new version."""
    server, key, settings = api
    before = server.get("/api/v1/customers/c3", key)
    old_version = int(before.headers["X-Sendtime-Version"])
    version = publish_rows(settings, [profile_row("c3", first_name="Newly", lifetime_value=Decimal("5"))])
    assert version == old_version + 1
    for _ in range(4):  # whichever worker answers
        after = server.get("/api/v1/customers/c3", key, headers={"If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200 and after.json()["first_name"] == "Newly"
        assert after.headers["X-Sendtime-Version"] == str(version)
        assert after.headers["ETag"] != before.headers["ETag"]
    unchanged = server.get("/api/v1/customers/c1", key)
    assert unchanged.headers["X-Sendtime-Version"] == str(version)
