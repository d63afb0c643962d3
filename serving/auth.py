"""Bearer authentication and scope checks: API keys and OAuth 2.0 access tokens.

The bearer's hash is looked up on every request (one indexed point read, microseconds on SQLite),
so a revoked key, or a token whose client was revoked, is refused on the very next request: there
is no cache to go stale. An access token (`sto_...`, serving/oauth.py) is honoured wherever a key
is, within its scopes, until it expires; its caller is named `client:<name>` (rate limits, logs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from serving.keys import hash_key
from serving.problems import Problem
from serving.reader import StoreReader

ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    if header.startswith("Bearer "):  # the common spelling, without lower-casing
        return header[7:].strip() or None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


_SCOPES: dict[str, frozenset[str]] = {}  # "a,b" -> frozenset, parsed once per distinct value


def authenticate(reader: StoreReader, header: str | None) -> tuple[Caller | None, str]:
    """(caller or None, why not). One indexed point read per request: no key cache to go stale."""
    caller, why, _ = authenticate_prefetching(reader, header, None)
    return caller, why


def authenticate_prefetching(
    reader: StoreReader, header: str | None, prefetch_customer: str | None
) -> tuple[Caller | None, str, tuple | None]:
    """authenticate() plus, with `prefetch_customer`, that customer's (version, body, etag) read by
    the same statement, so the hot endpoint costs one store round trip, not two."""
    token = bearer_token(header)
    if token is None:
        return None, "send the key as 'Authorization: Bearer <key>'", None
    key_hash = hash_key(token)
    if token.startswith(TOKEN_PREFIX):
        return _access_token(reader, key_hash, prefetch_customer)
    profile = None
    if prefetch_customer is None:
        row = reader.key(key_hash)
    else:
        name, scopes, revoked_at, version, body, etag = reader.key_and_profile(key_hash, prefetch_customer)
        row = None if name is None else (name, scopes, revoked_at)
        profile = (int(version) if version is not None else 0, body, etag)
    if row is None:
        return None, "the API key is not valid", None
    name, scopes, revoked_at = row
    if revoked_at is not None:
        return None, "the API key was revoked", None
    parsed = _SCOPES.get(scopes)
    if parsed is None:
        parsed = _SCOPES[scopes] = frozenset(scopes.split(","))
    return Caller(name, parsed), "", profile


TOKEN_PREFIX = "sto_"  # serving/oauth.py's access tokens (API keys start with st_)


def _access_token(
    reader: StoreReader, token_hash: str, prefetch_customer: str | None
) -> tuple[Caller | None, str, tuple | None]:
    profile = None
    if prefetch_customer is None:
        row = reader.token(token_hash)
    else:
        name, scopes, revoked_at, expires_at, version, body, etag = reader.token_and_profile(
            token_hash, prefetch_customer
        )
        row = None if name is None else (name, scopes, revoked_at, expires_at)
        profile = (int(version) if version is not None else 0, body, etag)
    if row is None:
        return None, "the access token is not valid", None
    name, scopes, revoked_at, expires_at = row
    if revoked_at is not None:
        return None, "the access token's client was revoked", None
    if int(expires_at) <= time.time():
        return None, "the access token expired: request a new one at /oauth/token", None
    parsed = _SCOPES.get(scopes)
    if parsed is None:
        parsed = _SCOPES[scopes] = frozenset(scopes.split(","))
    return Caller("client:" + name, parsed), "", profile


def require_scope(caller: Caller, scope: str) -> None:
    if not caller.allows(scope):
        raise Problem(
            "forbidden", f"this endpoint needs the scope {scope!r}" + ("" if scope == ADMIN else " (or admin)")
        )
