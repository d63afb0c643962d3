"""The OpenAPI document is true: the app's routes and the document's paths are the same set."""

from __future__ import annotations

from pipeline.config import load_settings
from serving.app import create_app
from serving.openapi import openapi_path
from serving.problems import PROBLEM_BASE, PROBLEM_TYPES
from tests.helpers.api_server import publish_rows


def _app_and_doc(tmp_path):
    settings = load_settings(tmp_path, environ={})
    publish_rows(settings, [])  # a published state: the document follows its contract
    app = create_app(settings)
    return app, app.test_client().get("/openapi.json").get_json()


def test_every_route_is_documented_and_every_path_is_a_route(tmp_path):
    app, doc = _app_and_doc(tmp_path)
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        routes.setdefault(openapi_path(rule.rule), set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert set(doc["paths"]) == set(routes)
    for path, methods in routes.items():
        assert set(doc["paths"][path]) == methods, path


def test_the_issue_and_design_locations_both_serve_it(tmp_path):
    app, doc = _app_and_doc(tmp_path)
    client = app.test_client()
    assert client.get("/openapi.json").get_json() == doc
    assert client.get("/api/v1/openapi.json").get_json() == doc
    assert doc["openapi"].startswith("3.1")


def test_every_response_has_a_schema_and_errors_are_problems(tmp_path):
    _, doc = _app_and_doc(tmp_path)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                if status == "304":
                    continue
                assert response.get("content"), (path, method, status)
                if path == "/oauth/token" and status in ("400", "401"):
                    # RFC 6749 section 5.2: the token endpoint's errors are its own JSON, not problems
                    assert list(response["content"]) == ["application/json"], (path, status)
                    continue
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"]
                    assert response["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }
            secured = op.get("security") not in (None, [])
            if secured and path.startswith("/api/v1/"):
                assert {"401", "403", "429"} <= set(op["responses"]), (path, method)
    types = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert types == [PROBLEM_BASE + slug for slug in PROBLEM_TYPES]


def test_profile_schema_lists_every_design_field(tmp_path):
    _, doc = _app_and_doc(tmp_path)
    profile = doc["components"]["schemas"]["Profile"]["properties"]
    # DESIGN.md's 18, the 6 engagement fields and best_send_hour_confidence
    assert "lifetime_value" in profile and "recommendations" in profile and len(profile) == 25
    assert profile["lifecycle_stage"]["enum"] == ["prospect", "active", "at_risk", "lapsed"]
    assert profile["recently_viewed"]["maxItems"] == 5 and profile["orders_count"]["minimum"] == 0
    assert profile["last_seen_at"]["format"] == "date-time" and profile["email"]["type"] == ["string", "null"]
    assert doc["components"]["schemas"]["ProfileField"]["enum"] == list(profile)
    assert doc["components"]["schemas"]["BatchRequest"]["properties"]["customer_ids"]["maxItems"] == 1000


def test_before_any_publish_the_document_is_served_without_fields(tmp_path):
    app = create_app(load_settings(tmp_path, environ={}))
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["components"]["schemas"]["Profile"]["properties"] == {"customer_id": {"type": "string"}}
