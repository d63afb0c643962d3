"""The online store: schema, engine factory and migrations (docs/architecture.md, "The online store").

SQLite in WAL mode by default (readers never block the one writer); PostgreSQL when
SENDTIME_ONLINE_STORE_URL is a postgresql+psycopg:// URL. Both through SQLAlchemy Core.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.config import Settings
from pipeline.errors import StoreError
from pipeline.ids import iso_z, utcnow

SCHEMA_VERSION = 3  # 2: mart_contracts; 3: oauth_clients, oauth_tokens

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
)

profiles = Table(
    "profiles",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("email_hash", String(64)),
    Column("body", Text, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("cycle_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_profiles_email_hash", "email_hash"),
)

products = Table(
    "products",
    metadata,
    Column("product_id", String(255), primary_key=True),
    Column("body", Text, nullable=False),
    Column("cycle_id", String(64), nullable=False),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("body", Text, nullable=False),
    Column("cycle_id", String(64), nullable=False),
)

published_versions = Table(
    "published_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("cycle_id", String(64), nullable=False),
    Column("as_of", String(40), nullable=False),
    Column("published_at", String(40), nullable=False),
    Column("newest_ingested_at", String(40)),
    Column("profiles_upserted", Integer, nullable=False, default=0),
    Column("profiles_deleted", Integer, nullable=False, default=0),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(32), nullable=False),
    Column("scopes", String(255), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40)),
)

runs = Table(
    "runs",
    metadata,
    Column("cycle_id", String(64), primary_key=True),
    Column("started_at", String(40), nullable=False),
    Column("ended_at", String(40)),
    Column("status", String(32), nullable=False),
    Column("as_of", String(40)),
    Column("phases", Text),
    Column("rows_read", BigInteger),
    Column("rows_changed", BigInteger),
    Column("rows_published", BigInteger),
    Column("rows_deleted", BigInteger),
    Column("validation", Text),
    Column("error", Text),
)

ingest_batches = Table(
    "ingest_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("source_file", String(1024)),
    Column("received", BigInteger, nullable=False),
    Column("accepted", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("quarantine_path", String(2048)),
    Column("ingested_at", String(40), nullable=False),
)

# a PostgreSQL streaming replica's lag in seconds: 0 when it replayed all it received, else the age of
# the last replayed transaction; (false, ...) on a primary (online_store_read_url, docs/recovery.md)
REPLICA_LAG_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "THEN 0 ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)

# the served marts' contract (pipeline/mart_contract.py) of the published state: one row, written by
# the publish that changes it, so every API node serves the fields of the data it reads
mart_contracts = Table(
    "mart_contracts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("checksum", String(64), nullable=False),
)
CONTRACTS_ROW = "served_marts"

collector_event_ids = Table(
    "collector_event_ids",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("batch_id", String(64), nullable=False),
)

# OAuth 2.0 client credentials (serving/oauth.py): clients' secrets and issued tokens, hashed (sha256)
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", String(255), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40)),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_name", String(255), nullable=False, index=True),
    Column("scopes", String(255), nullable=False),
    Column("issued_at", BigInteger, nullable=False),  # epoch seconds
    Column("expires_at", BigInteger, nullable=False),
)


def _sqlite_pragmas(busy_ms: int):
    def pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer; NORMAL is durable across app crashes in WAL mode
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return pragmas


# the pipeline's default wait for a locked SQLite store (a publish holds the write lock)
DEFAULT_WAIT_SECONDS = 10.0
# libpq (and psycopg) never wait less than this for a connection
PG_MIN_CONNECT_SECONDS = 2


def make_engine(url: str, *, wait_seconds: float | None = None, **kwargs) -> Engine:
    """An engine for the online store; SQLite gets WAL and a busy timeout on every connection.

    `wait_seconds` bounds how long a statement waits for a lock: SQLite's busy timeout; on
    PostgreSQL `lock_timeout` and `statement_timeout`, and the connection attempt (at least 2 s,
    libpq's minimum). The API passes its `api_store_timeout` so that a locked or unreachable store
    is a quick 503, never a request that hangs; the pipeline keeps the default (no statement bound
    on PostgreSQL, 10 s on SQLite).
    `hide_parameters`: a failed statement's message must never carry a profile body (emails,
    names) into a log or the run log.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        wait = DEFAULT_WAIT_SECONDS if wait_seconds is None else wait_seconds
        engine = create_engine(url, connect_args={"timeout": wait, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas(int(wait * 1000)))
        return engine
    if wait_seconds is not None:
        ms = max(int(wait_seconds * 1000), 1)
        kwargs.setdefault("connect_args", {}).update(
            {
                "connect_timeout": max(PG_MIN_CONNECT_SECONDS, math.ceil(wait_seconds)),
                "options": f"-c lock_timeout={ms} -c statement_timeout={ms}",
            }
        )
    return create_engine(url, pool_pre_ping=True, **kwargs)


def engine_for(settings: Settings, **kwargs) -> Engine:
    if not settings.online_store_url:
        settings.home.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.store_url, **kwargs)


def api_engine(settings: Settings, *, read: bool, **kwargs) -> Engine:
    """An engine for an API process: every wait bounded by `api_store_timeout` (a locked or
    unreachable store is a quick 503); `read`: the read replica when `online_store_read_url` is
    set, else the store. Never creates the SQLite file (a read of a missing store fails)."""
    url = settings.store_read_url if read else settings.store_url
    return make_engine(url, wait_seconds=settings.api_store_timeout_seconds, **kwargs)


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema; idempotent and safe to run from several processes."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        current = conn.execute(select(schema_version.c.version)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            current = SCHEMA_VERSION
        if current < 2:  # mart_contracts: created by create_all above; the next publish fills it
            conn.execute(update(schema_version).values(version=2))
            current = 2
        if current < 3:  # oauth_clients, oauth_tokens: created by create_all above, empty
            conn.execute(update(schema_version).values(version=3))
            current = 3
    return current


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("published_versions")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the pipeline (publish, cycle, run log) and the API (lookup, status, metrics)
# ---------------------------------------------------------------------------------------------


def email_hash(email: str | None) -> str | None:
    """sha256 hex of the trimmed, lower-cased email: the lookup key of `POST /customers/lookup`."""
    if email is None:
        return None
    normalized = email.strip().lower()
    if not normalized:
        return None
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def upsert_statement(conn: Connection, table: Table, key: Sequence[str]):
    """`INSERT ... ON CONFLICT (key) DO UPDATE` for SQLite and PostgreSQL, to run with executemany."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt = sqlite.insert(table)
    elif dialect == "postgresql":
        stmt = postgresql.insert(table)
    else:  # pragma: no cover - only the two stores of docs/architecture.md are supported
        raise StoreError(f"unsupported online store dialect: {dialect}")
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=updates)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return iso_z(value)
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _source_file(report: Mapping[str, Any]) -> str | None:
    named = report.get("source_file") or report.get("file")
    if named:
        return _text(named)
    files = report.get("files")
    if isinstance(files, list) and files:
        # IngestReport: one batch of several files; the names, comma-separated
        names = [str(f.get("file") or f.get("path")) if isinstance(f, Mapping) else str(f) for f in files]
        return ",".join(names)[:1024]
    return None


def _batch_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One `ingest_batches` row per batch of a report (`batches` holds several, when present)."""
    nested = report.get("batches")
    if isinstance(nested, list):
        scalars = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
        return [row for item in nested if isinstance(item, Mapping) for row in _batch_rows({**scalars, **item})]
    batch_id = report.get("batch_id")
    if not batch_id:
        return []
    quarantine = report.get("quarantine_path") or report.get("quarantine")
    return [
        {
            "batch_id": str(batch_id),
            "source": str(report.get("source") or ""),
            "source_file": _source_file(report),
            "received": _int(report.get("received")),
            "accepted": _int(report.get("accepted")),
            "rejected": _int(report.get("rejected")),
            "quarantine_path": _text(quarantine) if quarantine else None,
            "ingested_at": _text(report.get("ingested_at")) or iso_z(utcnow()),
        }
    ]


def record_ingest_batch(engine: Engine, report: Mapping[str, Any]) -> int:
    """Record an ingest (CLI) or collector batch in `ingest_batches`; idempotent by batch_id.

    Takes `IngestReport.to_dict()` (or the collector's RecordsReport): one batch (`batch_id`,
    `source`, `received`, `accepted`, `rejected`, `quarantine_path`, `ingested_at`, and
    `source_file` or a `files` list), or a report with a `batches` list of such objects.
    Returns the number of batches recorded.
    """
    if not _batch_rows(report):
        return 0
    with engine.begin() as conn:
        return write_ingest_batches(conn, report)


def write_ingest_batches(conn: Connection, report: Mapping[str, Any]) -> int:
    """record_ingest_batch inside the caller's transaction (the collector writes its claims and
    its batch in one)."""
    rows = _batch_rows(report)
    if rows:
        conn.execute(upsert_statement(conn, ingest_batches, ["batch_id"]), rows)
    return len(rows)


def current_version(engine: Engine) -> dict[str, Any] | None:
    """The published version readers see (the greatest), or None before the first publish."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(published_versions).order_by(published_versions.c.version.desc()).limit(1))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def contracts_checksum(engine: Engine) -> str | None:
    """The checksum of the published contract, None before the first publish that stored one."""
    with engine.connect() as conn:
        return conn.execute(select(mart_contracts.c.checksum).where(mart_contracts.c.name == CONTRACTS_ROW)).scalar()


def write_contracts(conn: Connection, body: str, checksum: str) -> None:
    """Store the served marts' contract (inside the publish transaction)."""
    conn.execute(delete(mart_contracts).where(mart_contracts.c.name == CONTRACTS_ROW))
    conn.execute(mart_contracts.insert().values(name=CONTRACTS_ROW, body=body, checksum=checksum))


def last_published_cycle_id(engine: Engine) -> str | None:
    version = current_version(engine)
    return version["cycle_id"] if version else None


def next_version(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(published_versions.c.version), 0))).scalar()) + 1


# --- run log (`runs`): one row per cycle, inserted `running`, updated at the end --------------

RUN_STATUSES = ("running", "success", "failed", "validation_failed")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=False, default=str)


def start_run(engine: Engine, cycle_id: str, started_at: datetime, as_of: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            runs.insert().values(
                cycle_id=cycle_id,
                started_at=iso_z(started_at),
                status="running",
                as_of=iso_z(as_of),
            )
        )


def finish_run(
    engine: Engine,
    cycle_id: str,
    *,
    status: str,
    ended_at: datetime,
    phases: Mapping[str, float] | None = None,
    rows_read: int | None = None,
    rows_changed: int | None = None,
    rows_published: int | None = None,
    rows_deleted: int | None = None,
    validation: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.cycle_id == cycle_id)
            .values(
                status=status,
                ended_at=iso_z(ended_at),
                phases=_json_or_none(phases),
                rows_read=rows_read,
                rows_changed=rows_changed,
                rows_published=rows_published,
                rows_deleted=rows_deleted,
                validation=_json_or_none(validation),
                error=error,
            )
        )


INTERRUPTED = "interrupted: the process stopped before the cycle ended (killed, crashed or stopped)"


def close_interrupted_runs(engine: Engine, now: datetime) -> int:
    """Mark `running` rows failed. Call only while holding the home's cycle lock: then no other
    cycle can be running, so a `running` row is one whose process died."""
    with engine.begin() as conn:
        result = conn.execute(
            update(runs)
            .where(runs.c.status == "running")
            .values(
                status="failed",
                ended_at=iso_z(now),
                error=INTERRUPTED,
            )
        )
    return result.rowcount or 0


def recent_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The latest cycles, newest first, JSON columns decoded."""
    with engine.connect() as conn:
        rows = conn.execute(select(runs).order_by(runs.c.cycle_id.desc()).limit(limit)).mappings().all()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("phases", "validation"):
            item[key] = json.loads(item[key]) if item.get(key) else None
        out.append(item)
    return out


def delete_profiles(conn: Connection, customer_ids: Iterable[str]) -> int:
    """Erase customers from the store (profiles and recommendations); returns profiles deleted."""
    ids = list(customer_ids)
    deleted = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        deleted += conn.execute(delete(profiles).where(profiles.c.customer_id.in_(chunk))).rowcount or 0
        conn.execute(delete(recommendations).where(recommendations.c.customer_id.in_(chunk)))
    return deleted
