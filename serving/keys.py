"""API keys: created and revoked with the CLI, stored hashed, shown once.

A key is `st_` + 43 url-safe characters (256 random bits). Only its sha256 is stored, so a
stolen store does not leak usable keys; the first characters (`key_prefix`) identify a key in
listings. A plain sha256 (no slow KDF) is right here: the key is high-entropy, not a password,
and the API hashes it on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import delete, insert, select, update

from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.errors import SendtimeError
from pipeline.store import api_keys, engine_for, migrate

SCOPES = ("profiles:read", "events:write", "admin")
KEY_PREFIX = "st_"
PREFIX_CHARS = 10  # "st_" + 7 characters shown in listings
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check(name: str, scopes: list[str]) -> list[str]:
    if not _NAME.match(name or ""):
        raise SendtimeError(
            f"invalid key name {name!r}: use 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        )
    if not scopes:
        raise SendtimeError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise SendtimeError(f"unknown scope {unknown[0]!r}: use {', '.join(SCOPES)}")
    return list(dict.fromkeys(scopes))  # de-duplicated, order kept


def create_key(settings: Settings, name: str, scopes: list[str]) -> tuple[str, dict]:
    """A new key (returned once, never stored) and its record. A revoked key's name may be reused."""
    scopes = _check(name, scopes)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = {"name": name, "key_prefix": key[:PREFIX_CHARS], "scopes": scopes, "created_at": iso_z(utcnow())}
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.begin() as conn:
            existing = conn.execute(select(api_keys.c.revoked_at).where(api_keys.c.name == name)).first()
            if existing is not None and existing.revoked_at is None:
                raise SendtimeError(f"a key named {name!r} already exists (revoke it first)")
            if existing is not None:
                conn.execute(delete(api_keys).where(api_keys.c.name == name))
            conn.execute(
                insert(api_keys).values(
                    name=name,
                    key_hash=hash_key(key),
                    key_prefix=record["key_prefix"],
                    scopes=",".join(scopes),
                    created_at=record["created_at"],
                    revoked_at=None,
                )
            )
    finally:
        engine.dispose()
    return key, record


def list_keys(settings: Settings) -> list[dict]:
    """Every key, active and revoked; never a hash."""
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    api_keys.c.name,
                    api_keys.c.key_prefix,
                    api_keys.c.scopes,
                    api_keys.c.created_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.name)
            ).all()
    finally:
        engine.dispose()
    return [
        {
            "name": r.name,
            "key_prefix": r.key_prefix,
            "scopes": r.scopes.split(","),
            "created_at": r.created_at,
            "revoked_at": r.revoked_at,
        }
        for r in rows
    ]


def revoke_key(settings: Settings, name: str) -> bool:
    """True when an active key was revoked. Takes effect on the API's next request (no cache)."""
    engine = engine_for(settings)
    try:
        migrate(engine)
        with engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=iso_z(utcnow()))
            )
            return result.rowcount > 0
    finally:
        engine.dispose()
