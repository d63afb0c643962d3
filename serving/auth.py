"""Bearer-key authentication and scope checks.

The key's hash is looked up on every request (one indexed point read, microseconds on SQLite),
so a revoked key is refused on the very next request: there is no key cache to go stale.
"""
from __future__ import annotations

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
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def authenticate(reader: StoreReader, header: str | None) -> tuple[int, Caller | None, str]:
    """(published version, caller or None, why not). Reads the version in the same statement."""
    token = bearer_token(header)
    if token is None:
        return reader.version(), None, "send the key as 'Authorization: Bearer <key>'"
    version, name, scopes, revoked_at = reader.version_and_key(hash_key(token))
    if name is None:
        return version, None, "the API key is not valid"
    if revoked_at is not None:
        return version, None, "the API key was revoked"
    return version, Caller(name, frozenset(scopes.split(","))), ""


def require_scope(caller: Caller, scope: str) -> None:
    if not caller.allows(scope):
        raise Problem("forbidden", f"this endpoint needs the scope {scope!r} (or admin)")
