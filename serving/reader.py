"""The online-store reader: the only way the API touches data.

Hot-path design (docs/api.md, "Performance"):
- one raw DB-API connection per worker thread, opened lazily after gunicorn forks, reused for
  every request (no pool checkout, no SQL compilation: fixed SQL strings);
- each read is ONE statement (one snapshot) or an explicit read-only transaction, and every
  result is fetched to the end, so no read transaction outlives the request: the API never holds
  anything that blocks a publish or a WAL checkpoint;
- SQLite connections are `query_only`: the API cannot write the store through the reader.
Reads see the latest committed publish, so new publishes are served without a restart.

Availability (docs/recovery.md): reads go to `online_store_read_url` (a PostgreSQL streaming
replica) when it is set. Every wait is bounded by `api_store_timeout` (SQLite's busy timeout;
PostgreSQL's lock, statement and connect timeouts), and once a read failed, reads fail at once
for `RECHECK_SECONDS` before one tries the store again: a locked or unreachable store costs one
request the timeout, and every other request (and the rest of that one: the fast path handing
over to Flask, the version header) a 503 at once, never a queue of requests that each wait.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import make_url

from pipeline.config import Settings
from pipeline.mart_contract import Contracts, from_json
from pipeline.store import CONTRACTS_ROW, REPLICA_LAG_SQL, make_engine

# the current published version as a one-row derived table, so a data read and the version it
# was read from come from the same statement (the same snapshot)
_VERSION = "(SELECT MAX(version) AS version FROM published_versions) v"

SQL = {
    "version": "SELECT MAX(version) FROM published_versions",
    "key": "SELECT name, scopes, revoked_at FROM api_keys WHERE key_hash = ?",
    # the hot path (GET one profile): key, version and profile in one statement, one snapshot
    "key_and_profile": f"SELECT k.name, k.scopes, k.revoked_at, v.version, p.body, p.etag FROM {_VERSION} "
    "LEFT JOIN api_keys k ON k.key_hash = ? LEFT JOIN profiles p ON p.customer_id = ?",
    # an OAuth access token (serving/oauth.py): its client's name, the token's scopes, the client's
    # revocation and the token's expiry, checked on every request
    "token": "SELECT c.name, t.scopes, c.revoked_at, t.expires_at FROM oauth_tokens t "
    "JOIN oauth_clients c ON c.name = t.client_name WHERE t.token_hash = ?",
    "token_and_profile": f"SELECT k.name, k.scopes, k.revoked_at, k.expires_at, v.version, p.body, p.etag "
    f"FROM {_VERSION} LEFT JOIN (SELECT c.name, t.scopes, c.revoked_at, t.expires_at "
    "FROM oauth_tokens t JOIN oauth_clients c ON c.name = t.client_name "
    "WHERE t.token_hash = ?) k ON 1 = 1 LEFT JOIN profiles p ON p.customer_id = ?",
    "profile": f"SELECT v.version, p.body, p.etag FROM {_VERSION} LEFT JOIN profiles p ON p.customer_id = ?",
    "profile_by_email": f"SELECT v.version, p.body, p.etag FROM {_VERSION} "
    "LEFT JOIN profiles p ON p.email_hash = ? ORDER BY p.customer_id LIMIT 1",
    "latest_version": "SELECT version, published_at, as_of, cycle_id FROM published_versions "
    "ORDER BY version DESC LIMIT 1",
    "recommendations": "SELECT body FROM recommendations WHERE customer_id = ?",
    "contracts": "SELECT checksum, body FROM mart_contracts WHERE name = ?",
    "replica_lag": REPLICA_LAG_SQL,
}
# after a failed read, reads fail at once for this long before one tries the store again
RECHECK_SECONDS = 1.0
# monotonic time until which this process's store reads fail at once; shared by every reader of
# the process (the store reader, the metrics and status page snapshots), so that one request
# never waits for the same dead store twice
_down_until = 0.0


def mark_unavailable() -> None:
    """A read of the store failed: fail fast for RECHECK_SECONDS."""
    global _down_until
    _down_until = time.monotonic() + RECHECK_SECONDS


def recently_unavailable() -> bool:
    return _down_until > 0.0 and time.monotonic() < _down_until


_ID_CHUNK = 500  # ids per IN (...) list


class StoreUnavailable(Exception):
    """The store could not be read (missing schema, database down); answered with a 503."""


class StoreNotCreated(StoreUnavailable):
    """A fresh home: no SQLite store yet (nothing published)."""


class StoreReader:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.store_read_url
        self.is_replica = bool(settings.online_store_read_url) and settings.online_store_read_url != settings.store_url
        self.is_sqlite = self.url.startswith("sqlite")
        self.wait = settings.api_store_timeout_seconds
        self._local = threading.local()
        # the published contract, read again when the published version moves
        self._contracts: tuple[int, str | None, Contracts] = (-1, None, {})
        self._engine = (
            None if self.is_sqlite else make_engine(self.url, wait_seconds=self.wait, pool_size=4, max_overflow=4)
        )
        if self.is_sqlite:
            self._sqlite_path = make_url(self.url).database
            self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        else:
            import psycopg

            self._errors = (psycopg.Error,)

    # -- connections --------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self.is_sqlite:
            if not self._sqlite_path or not os.path.exists(self._sqlite_path):
                raise StoreNotCreated("the online store does not exist yet")
            conn = sqlite3.connect(self._sqlite_path, timeout=self.wait, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.wait * 1000)}")
            conn.execute("PRAGMA query_only=1")
            # read pages through a memory map (no read() syscall per page) of up to 1 GiB, shared
            # with the OS page cache; the WAL and a publish's writes are unaffected
            conn.execute("PRAGMA mmap_size=1073741824")
            return conn, conn
        fairy = self._engine.raw_connection()
        dbapi = fairy.driver_connection
        dbapi.autocommit = True  # every statement its own transaction: nothing left open
        return fairy, dbapi  # keep the pool proxy referenced so the pool does not reclaim it

    def _conn(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # a forked worker never reuses the parent's
            local.handle, local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        """Forget the connection, fail fast for a while, and say what failed (the type only)."""
        self._drop()
        mark_unavailable()
        return StoreUnavailable(type(exc).__name__)

    def _check_up(self) -> None:
        if recently_unavailable():
            raise StoreUnavailable("the store failed a moment ago")

    def _drop(self) -> None:
        handle = getattr(self._local, "handle", None)
        self._local.pid = None
        if handle is not None:
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; forget it
                pass

    def _sql(self, sql: str) -> str:
        return sql if self.is_sqlite else sql.replace("?", "%s")  # psycopg's paramstyle

    # -- primitives -----------------------------------------------------------------------------
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._check_up()
        try:
            # fetched to the end: the statement's read snapshot ends here
            return self._conn().execute(self._sql(sql), params).fetchall()
        except self._errors as exc:
            raise self._failed(exc) from None

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Several statements that must see one publish (old or new, never a mix)."""
        begin = "BEGIN" if self.is_sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        self._check_up()
        try:
            self._conn().execute(begin)
        except self._errors as exc:
            raise self._failed(exc) from None
        try:
            yield
        finally:
            try:
                self._conn().execute("COMMIT")
            except self._errors:
                self._drop()

    # -- queries ----------------------------------------------------------------------------------
    def version(self) -> int:
        row = self.one(SQL["version"])
        return int(row[0]) if row and row[0] is not None else 0

    def key(self, key_hash: str) -> tuple[str, str, str | None] | None:
        """(name, scopes, revoked_at) of the key with this hash, or None."""
        return self.one(SQL["key"], (key_hash,))

    def key_and_profile(self, key_hash: str, customer_id: str) -> tuple:
        """(name, scopes, revoked_at, version, body, etag); the key columns are None for an unknown
        key, body and etag None for an unknown customer."""
        return self.one(SQL["key_and_profile"], (key_hash, customer_id))

    def token(self, token_hash: str) -> tuple[str, str, str | None, int] | None:
        """(client name, scopes, client revoked_at, expires_at) of the access token, or None."""
        return self.one(SQL["token"], (token_hash,))

    def token_and_profile(self, token_hash: str, customer_id: str) -> tuple:
        """(client name, scopes, revoked_at, expires_at, version, body, etag), as key_and_profile."""
        return self.one(SQL["token_and_profile"], (token_hash, customer_id))

    def profile(self, customer_id: str) -> tuple[int, str | None, str | None]:
        """(version, body, etag); body None when the customer has no profile."""
        version, body, etag = self.one(SQL["profile"], (customer_id,)) or (None, None, None)
        return (int(version) if version is not None else 0), body, etag

    def profile_by_email_hash(self, email_hash: str) -> tuple[int, str | None, str | None]:
        version, body, etag = self.one(SQL["profile_by_email"], (email_hash,)) or (None, None, None)
        return (int(version) if version is not None else 0), body, etag

    def profiles(self, customer_ids: Sequence[str]) -> tuple[int, dict[str, str]]:
        """(version, {customer_id: body}) in one statement, so one snapshot."""
        marks = ",".join("?" * len(customer_ids))
        rows = self.all(
            "SELECT NULL, CAST(MAX(version) AS TEXT) FROM published_versions UNION ALL "
            f"SELECT customer_id, body FROM profiles WHERE customer_id IN ({marks})",
            customer_ids,
        )
        version = 0
        found: dict[str, str] = {}
        for cid, value in rows:
            if cid is None:
                version = int(value) if value is not None else 0
            else:
                found[cid] = value
        return version, found

    def recommendations(self, customer_id: str) -> str | None:
        row = self.one(SQL["recommendations"], (customer_id,))
        return row[0] if row else None

    def products(self, product_ids: Sequence[str]) -> dict[str, str]:
        if not product_ids:
            return {}
        marks = ",".join("?" * len(product_ids))
        return dict(self.all(f"SELECT product_id, body FROM products WHERE product_id IN ({marks})", product_ids))

    def contracts(self, version: int | None = None) -> Contracts:
        """The served marts' contract of the published state ({} before the first publish): read
        once per published version (`version`: the one the caller's data was read from)."""
        seen, checksum, contracts = self._contracts
        if version is None:
            try:
                version = self.version()
            except StoreUnavailable:
                if seen >= 0:
                    return contracts  # the store is down: the last contract this worker read
                raise
        if version == seen:
            return contracts
        try:
            row = self.one(SQL["contracts"], (CONTRACTS_ROW,))
        except StoreUnavailable:
            if seen >= 0:
                return contracts  # a store migrating from schema 1: keep what we had
            row = None
        if row is None:
            contracts, checksum = {}, None
        elif row[0] != checksum:
            checksum, contracts = row[0], from_json(row[1])
        self._contracts = (version, checksum, contracts)
        return contracts

    def latest_version(self) -> tuple | None:
        return self.one(SQL["latest_version"])

    def known_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """The ids the collector's index already holds (each landed in the lake before it was
        recorded). A replica may lag: an id it does not show yet is landed again and then found
        by the claim on the primary, which is harmless (serving/api/events.py)."""
        found: set[str] = set()
        for start in range(0, len(event_ids), _ID_CHUNK):
            chunk = event_ids[start : start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.all(f"SELECT event_id FROM collector_event_ids WHERE event_id IN ({marks})", chunk)
            )
        return found

    def replica_lag(self) -> float | None:
        """Seconds the read replica is behind (0: it replayed all it received); None when the API
        reads the store itself."""
        if not self.is_replica or self.is_sqlite:
            return None
        row = self.one(SQL["replica_lag"])
        if row is None or not row[0]:
            return None  # the read URL is not (or no longer) a standby: it is a primary
        return float(row[1]) if row[1] is not None else 0.0
