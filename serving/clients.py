"""OAuth 2.0 clients (client credentials, RFC 6749 section 4.4): created and revoked with the CLI.

`sendtime clients create --name N --scopes S` makes a client: `client_id` (`stc_` + 22 url-safe
characters) and `client_secret` (`sts_` + 43), printed once; only the secret's sha256 is stored (a
high-entropy secret, not a password: no slow KDF, as for API keys in serving/keys.py). The client
exchanges them at `POST /oauth/token` (serving/oauth.py) for access tokens that work wherever an API
key does, within the client's scopes. `clients revoke NAME` ends the client and every token it holds
at once: the API checks the client on every request (no cache).
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, insert, select, update

from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.errors import SendtimeError
from pipeline.store import engine_for, migrate, oauth_clients, oauth_tokens
from serving.keys import SCOPES, _check, hash_key

CLIENT_ID_PREFIX = "stc_"
SECRET_PREFIX = "sts_"


def create_client(settings: Settings, name: str, scopes: list[str]) -> tuple[str, str, dict]:
    """(client_id, client_secret, record). A revoked client's name may be reused."""
    try:
        scopes = _check(name, scopes)
    except SendtimeError as exc:
        raise SendtimeError(str(exc).replace("key", "client")) from None
    client_id = CLIENT_ID_PREFIX + secrets.token_urlsafe(16)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = {"name": name, "client_id": client_id, "scopes": scopes, "created_at": iso_z(utcnow())}
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.begin() as conn:
            existing = conn.execute(select(oauth_clients.c.revoked_at).where(oauth_clients.c.name == name)).first()
            if existing is not None and existing.revoked_at is None:
                raise SendtimeError(f"a client named {name!r} already exists (revoke it first)")
            if existing is not None:
                conn.execute(delete(oauth_clients).where(oauth_clients.c.name == name))
            conn.execute(
                insert(oauth_clients).values(
                    name=name,
                    client_id=client_id,
                    secret_hash=hash_key(secret),
                    scopes=",".join(scopes),
                    created_at=record["created_at"],
                    revoked_at=None,
                )
            )
    finally:
        engine.dispose()
    return client_id, secret, record


def list_clients(settings: Settings) -> list[dict]:
    """Every client, active and revoked; never a secret or its hash."""
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    oauth_clients.c.name,
                    oauth_clients.c.client_id,
                    oauth_clients.c.scopes,
                    oauth_clients.c.created_at,
                    oauth_clients.c.revoked_at,
                ).order_by(oauth_clients.c.name)
            ).all()
    finally:
        engine.dispose()
    return [
        {
            "name": r.name,
            "client_id": r.client_id,
            "scopes": r.scopes.split(","),
            "created_at": r.created_at,
            "revoked_at": r.revoked_at,
        }
        for r in rows
    ]


def revoke_client(settings: Settings, name: str) -> bool:
    """True when an active client was revoked; its tokens stop working on the next request."""
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.begin() as conn:
            result = conn.execute(
                update(oauth_clients)
                .where(oauth_clients.c.name == name, oauth_clients.c.revoked_at.is_(None))
                .values(revoked_at=iso_z(utcnow()))
            )
            conn.execute(delete(oauth_tokens).where(oauth_tokens.c.client_name == name))
            return result.rowcount > 0
    finally:
        engine.dispose()


__all__ = ["SCOPES", "create_client", "list_clients", "revoke_client"]
