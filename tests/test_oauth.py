"""OAuth 2.0 client credentials end to end (DESIGN.md "Privacy and access"): `sendtime clients`, a
real gunicorn serving `POST /oauth/token` (authlib), tokens on every route within their scopes,
RFC 6749 errors, expiry and revocation on the next request."""

from __future__ import annotations

import base64
import sqlite3

import pytest
import requests

from pipeline.config import load_settings
from tests.helpers.api_server import ApiServer, seed_store
from tests.helpers.cli import Cli

TOKEN = "/oauth/token"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("oauth-home")
    keys = seed_store(load_settings(home, environ={}))
    cli = Cli(home)
    clients = {
        name: cli.json("clients", "create", "--name", name, "--scopes", scopes)
        for name, scopes in (("braze", "profiles:read"), ("ops", "admin"), ("both", "profiles:read,events:write"))
    }
    with ApiServer(home, workers=1) as server:
        yield server, clients, keys, cli


def _token(server, client, **form) -> requests.Response:
    return requests.post(
        server.url + TOKEN,
        data={"grant_type": "client_credentials", **form},
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )


def test_clients_cli_shows_the_secret_once(api):
    _server, clients, _keys, cli = api
    listed = cli.json("clients", "list")
    assert [c["name"] for c in listed] == ["both", "braze", "ops"]
    assert all("client_secret" not in c and "secret_hash" not in c for c in listed)
    assert clients["braze"]["client_id"].startswith("stc_") and clients["braze"]["client_secret"].startswith("sts_")
    con = sqlite3.connect(cli.home / "online.sqlite")
    stored = con.execute("select secret_hash from oauth_clients where name = 'braze'").fetchone()[0]
    con.close()
    assert clients["braze"]["client_secret"] not in stored and len(stored) == 64
    dup = cli("clients", "create", "--name", "braze", check=False)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    bad = cli("clients", "create", "--name", "x", "--scopes", "everything", check=False)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


def test_token_flow_basic_and_body(api):
    server, clients, _keys, _cli = api
    r = _token(server, clients["braze"])
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "profiles:read"
    token = body["access_token"]
    # the fast path (GET one profile), Flask's path (a projection, a batch) and a 304
    fast = server.get("/api/v1/customers/c1", token)
    assert fast.status_code == 200 and fast.headers["X-Content-Type-Options"] == "nosniff"
    assert server.get("/api/v1/customers/c1?fields=email", token).json() == {
        "customer_id": "c1",
        "email": "ada.lovelace@example.com",
    }
    assert server.get("/api/v1/customers/c1", token, headers={"If-None-Match": fast.headers["ETag"]}).status_code == 304
    assert server.post("/api/v1/customers/batch", token, json={"customer_ids": ["c1", "zz"]}).json()["not_found"] == [
        "zz"
    ]
    # within its scopes only
    denied = server.post("/api/v1/events", token, json=[{"event_id": "x"}])
    assert denied.status_code == 403 and denied.json()["type"].endswith("/forbidden")
    assert server.get("/status", token).status_code == 403
    # credentials in the body; a narrower scope than the client's
    both = clients["both"]
    r = requests.post(
        server.url + TOKEN,
        data={
            "grant_type": "client_credentials",
            "scope": "events:write",
            "client_id": both["client_id"],
            "client_secret": both["client_secret"],
        },
    )
    assert r.status_code == 200 and r.json()["scope"] == "events:write"
    narrow = r.json()["access_token"]
    assert server.get("/api/v1/customers/c1", narrow).status_code == 403
    # admin tokens open the status page
    admin = _token(server, clients["ops"]).json()["access_token"]
    assert server.get("/status", admin).status_code == 200


def test_rfc6749_errors(api):
    server, clients, _keys, _cli = api
    braze = clients["braze"]

    def error(response, status, code):
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"] == code
        return response

    bad_secret = error(
        requests.post(
            server.url + TOKEN, data={"grant_type": "client_credentials"}, auth=(braze["client_id"], "sts_wrong")
        ),
        401,
        "invalid_client",
    )
    assert bad_secret.headers["WWW-Authenticate"].startswith("Basic")
    unknown = error(
        requests.post(
            server.url + TOKEN, data={"grant_type": "client_credentials", "client_id": "stc_nope", "client_secret": "x"}
        ),
        401,
        "invalid_client",
    )
    assert unknown.json()["error_description"] == bad_secret.json()["error_description"]  # no client enumeration
    error(_token(server, braze, grant_type="password"), 400, "unsupported_grant_type")
    error(_token(server, braze, scope="admin"), 400, "invalid_scope")
    error(_token(server, braze, scope="profiles:read events:write"), 400, "invalid_scope")
    error(_token(server, braze, scope="everything"), 400, "invalid_scope")
    error(
        requests.post(server.url + TOKEN, data={}, auth=(braze["client_id"], braze["client_secret"])),
        400,
        "invalid_request",
    )
    error(requests.post(server.url + TOKEN, data={"grant_type": "client_credentials"}), 401, "invalid_client")
    not_utf8 = "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()
    r = requests.post(
        server.url + TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": not_utf8}
    )
    assert r.status_code in (400, 401) and r.json()["error"] in ("invalid_request", "invalid_client")
    r = requests.post(
        server.url + TOKEN, json={"grant_type": "client_credentials"}, auth=(braze["client_id"], braze["client_secret"])
    )
    assert r.status_code == 400  # a JSON body is not the form RFC 6749 asks for
    assert requests.get(server.url + TOKEN).status_code == 405
    assert '"status":5' not in server.logs()


def test_revocation_and_expiry_take_effect_on_the_next_request(api):
    server, clients, _keys, cli = api
    token = _token(server, clients["both"]).json()["access_token"]
    assert server.get("/api/v1/customers/c1", token).status_code == 200
    # expiry: the token's time is up (the store says so; no waiting an hour)
    con = sqlite3.connect(cli.home / "online.sqlite")
    con.execute("update oauth_tokens set expires_at = 0")
    con.commit()
    con.close()
    expired = server.get("/api/v1/customers/c1", token)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    token = _token(server, clients["both"]).json()["access_token"]
    assert server.get("/api/v1/customers/c1", token).status_code == 200
    assert cli("clients", "revoke", "both").returncode == 0
    revoked = server.get("/api/v1/customers/c1", token)
    assert revoked.status_code == 401
    assert _token(server, clients["both"]).json()["error"] == "invalid_client"
    assert [c["revoked_at"] is not None for c in cli.json("clients", "list") if c["name"] == "both"] == [True]


def test_openapi_declares_both_schemes(api):
    server, _clients, _keys, _cli = api
    doc = server.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == TOKEN and set(flow["scopes"]) == {"profiles:read", "events:write", "admin"}
    assert doc["paths"]["/api/v1/customers/{customer_id}"]["get"]["security"] == [
        {"bearerAuth": []},
        {"oauth2": ["profiles:read"]},
    ]
    assert doc["paths"][TOKEN]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
