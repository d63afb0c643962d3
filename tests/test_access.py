"""Routes are closed unless declared open (serving/access.py): the app's URL map, walked.

Every endpoint is either listed in `access.OPEN` or declares the scope its key needs; a route added
without either needs an admin key (fail closed). In-process (Flask's test client), no server.
"""

from __future__ import annotations

import pytest
from flask import Response

from pipeline.config import load_settings
from serving import access
from serving.app import create_app
from serving.keys import create_key

# what answers without a key today (docs/api.md, "Where things live"); /status only in "open" mode
ALWAYS_OPEN = {
    "health.health",
    "health_v1.health",
    "health.ready",
    "health_v1.ready",
    "health.openapi",
    "health_v1.openapi",
    "metrics",
    "oauth.token",
    "webhooks.mailchimp_check",
}


@pytest.fixture(params=["key", "open"])
def app_and_keys(request, tmp_path):
    settings = load_settings(tmp_path, environ={"SENDTIME_STATUS_PAGE_ACCESS": request.param})
    keys = {
        scope: create_key(settings, scope.replace(":", "-"), [scope])[0]
        for scope in ("profiles:read", "events:write", "admin")
    }
    return create_app(settings), settings, keys


def test_every_endpoint_is_open_or_declares_a_scope(app_and_keys) -> None:
    app, settings, _ = app_and_keys
    undeclared = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint not in access.OPEN and access.declared_scope(view) is None:
            undeclared.append(f"{rule.rule} ({rule.endpoint})")
    assert not undeclared, (
        "routes with neither a scope (@requires) nor a place in serving/access.py's OPEN "
        f"list; they answer admin keys only: {undeclared}"
    )
    assert access.undeclared(app) == []
    assert set(access.OPEN) <= set(app.view_functions), "OPEN names an endpoint that does not exist"


def test_the_open_endpoints_are_the_ones_open_today(app_and_keys) -> None:
    app, settings, _ = app_and_keys
    policy = access.policy(app, settings)
    opened = {e for e, scope in policy.items() if e is not None and scope is None}
    expected = ALWAYS_OPEN | ({"status.status_page"} if settings.status_page_access == "open" else set())
    assert opened == expected
    assert policy["status.status_page"] == (None if settings.status_page_access == "open" else "admin")
    assert policy["events.post_events"] == "events:write"
    assert all(policy[e] == "profiles:read" for e in policy if e and e.startswith("profiles."))


def test_open_endpoints_answer_without_a_key_and_the_others_refuse(app_and_keys) -> None:
    app, settings, _ = app_and_keys
    client = app.test_client()
    policy = access.policy(app, settings)
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<customer_id:customer_id>", "c1")
        method = next(m for m in ("GET", "POST", "HEAD") if m in rule.methods)
        response = client.open(path, method=method, json={} if method == "POST" else None)
        if policy[rule.endpoint] is None:
            assert response.status_code not in (401, 403), (path, response.get_data(as_text=True))
        else:
            assert response.status_code == 401, (path, response.status_code)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_undeclared_route_is_refused_unless_admin(app_and_keys) -> None:
    app, _, keys = app_and_keys
    app.add_url_rule("/api/v1/forgotten", "forgotten", lambda: Response("secret"))
    declared = access.requires("profiles:read")(lambda: Response("declared"))
    app.add_url_rule("/api/v1/declared", "declared", declared)
    assert access.undeclared(app) == ["forgotten"]
    client = app.test_client()

    def get(path: str, scope: str | None = None):
        return client.get(path, headers={"Authorization": f"Bearer {keys[scope]}"} if scope else {})

    assert get("/api/v1/forgotten").status_code == 401
    for scope in ("profiles:read", "events:write"):
        refused = get("/api/v1/forgotten", scope)
        assert refused.status_code == 403 and "'admin'" in refused.get_json()["detail"]
    assert get("/api/v1/forgotten", "admin").get_data(as_text=True) == "secret"
    assert get("/api/v1/declared").status_code == 401
    assert get("/api/v1/declared", "events:write").status_code == 403
    assert get("/api/v1/declared", "profiles:read").get_data(as_text=True) == "declared"


def test_the_openapi_document_agrees_with_the_policy(app_and_keys) -> None:
    from serving.openapi import openapi_path

    app, settings, _ = app_and_keys
    doc = app.test_client().get("/openapi.json").get_json()
    policy = access.policy(app, settings)
    for rule in app.url_map.iter_rules():
        for method, op in doc["paths"][openapi_path(rule.rule)].items():
            security = op.get("security", [])
            anonymous = security == [] or {} in security
            if policy[rule.endpoint] is None:
                assert anonymous, (rule.rule, method, security)
            else:
                assert {"bearerAuth": []} in security, (rule.rule, method, security)
