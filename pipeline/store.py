"""The online store: schema, engine factory and migrations (docs/architecture.md, "The online store").

SQLite in WAL mode by default (readers never block the one writer); PostgreSQL when
SENDTIME_ONLINE_STORE_URL is a postgresql+psycopg:// URL. Both through SQLAlchemy Core.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
)

from pipeline.config import Settings

SCHEMA_VERSION = 1

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
)

profiles = Table(
    "profiles", metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("email_hash", String(64)),
    Column("body", Text, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("cycle_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_profiles_email_hash", "email_hash"),
)

products = Table(
    "products", metadata,
    Column("product_id", String(255), primary_key=True),
    Column("body", Text, nullable=False),
    Column("cycle_id", String(64), nullable=False),
)

recommendations = Table(
    "recommendations", metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("body", Text, nullable=False),
    Column("cycle_id", String(64), nullable=False),
)

published_versions = Table(
    "published_versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("cycle_id", String(64), nullable=False),
    Column("as_of", String(40), nullable=False),
    Column("published_at", String(40), nullable=False),
    Column("newest_ingested_at", String(40)),
    Column("profiles_upserted", Integer, nullable=False, default=0),
    Column("profiles_deleted", Integer, nullable=False, default=0),
)

api_keys = Table(
    "api_keys", metadata,
    Column("name", String(255), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(32), nullable=False),
    Column("scopes", String(255), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40)),
)

runs = Table(
    "runs", metadata,
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
    "ingest_batches", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("source_file", String(1024)),
    Column("received", BigInteger, nullable=False),
    Column("accepted", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("quarantine_path", String(2048)),
    Column("ingested_at", String(40), nullable=False),
)

collector_event_ids = Table(
    "collector_event_ids", metadata,
    Column("event_id", String(255), primary_key=True),
    Column("batch_id", String(64), nullable=False),
)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API types
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL is durable across app crashes in WAL mode
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for the online store; SQLite gets WAL and a busy timeout on every connection."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def engine_for(settings: Settings, **kwargs) -> Engine:
    if not settings.online_store_url:
        settings.home.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.store_url, **kwargs)


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema; idempotent and safe to run from several processes."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        current = conn.execute(select(schema_version.c.version)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            current = SCHEMA_VERSION
        # future migrations: `if current < 2: ...; current = 2`
    return current


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("published_versions")
