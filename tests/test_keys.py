"""API keys through the real CLI: shown once, stored hashed, scopes checked, revocable."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from pipeline.errors import SendtimeError
from serving.keys import create_key, list_keys, revoke_key


def test_create_list_revoke_through_the_cli(cli, home):
    created = cli.json("keys", "create", "--name", "braze", "--scopes", "profiles:read,events:write")
    key = created["key"]
    assert key.startswith("st_") and len(key) >= 40
    assert created["scopes"] == ["profiles:read", "events:write"] and created["key_prefix"] == key[:10]
    with sqlite3.connect(home / "online.sqlite") as conn:
        stored = conn.execute("select key_hash, scopes, revoked_at from api_keys where name='braze'").fetchone()
        dump = "\n".join(conn.iterdump())
    assert stored == (hashlib.sha256(key.encode()).hexdigest(), "profiles:read,events:write", None)
    assert key not in dump  # only the hash is stored
    listed = cli.json("keys", "list")
    assert listed == [
        {
            "name": "braze",
            "key_prefix": key[:10],
            "scopes": ["profiles:read", "events:write"],
            "created_at": created["created_at"],
            "revoked_at": None,
        }
    ]
    assert key not in cli("keys", "list").stdout
    assert "revoked" in cli("keys", "revoke", "braze").stdout
    assert cli.json("keys", "list")[0]["revoked_at"] is not None
    again = cli("keys", "revoke", "braze", check=False)
    assert again.returncode != 0 and "no active key" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "x", "--scopes", "profiles:write"], "unknown scope 'profiles:write'"),
        (["--name", "bad name", "--scopes", "admin"], "invalid key name"),
        (["--name", "x", "--scopes", ""], "at least one scope"),
    ],
)
def test_bad_keys_are_clear_errors(cli, args, message):
    proc = cli("keys", "create", *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_duplicate_active_name_is_refused_and_a_revoked_name_reused(settings):
    first, _ = create_key(settings, "sendgrid", ["profiles:read"])
    with pytest.raises(SendtimeError, match="already exists"):
        create_key(settings, "sendgrid", ["admin"])
    assert revoke_key(settings, "sendgrid") is True
    assert revoke_key(settings, "sendgrid") is False
    second, record = create_key(settings, "sendgrid", ["admin", "admin"])
    assert second != first and record["scopes"] == ["admin"]
    assert [(k["name"], k["revoked_at"]) for k in list_keys(settings)] == [("sendgrid", None)]
    assert all("key_hash" not in k for k in list_keys(settings))
