"""Publish: the cycle's changes (pipeline/changes.py) -> one upsert transaction in the online store.

The bodies were serialized once, by the change reader; publish writes them, deletes erased
customers, stores the marts' contract when it changed (the API serves the fields of the state it
reads) and records the new version, all in ONE transaction: a reader sees the old state or the
new one, never a mix (docs/architecture.md "The online store").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from pipeline import lake_files, store
from pipeline.changes import Changes
from pipeline.errors import StoreError
from pipeline.ids import iso_z, utcnow
from pipeline.mart_contract import checksum, to_json

# SQLite caps bound parameters per statement; executemany sends one row per execution, but
# chunking keeps the memory of one batch of parameter dicts bounded at any size
_CHUNK = 20_000


# ------------------------------------------------------------------------------ publishing


@dataclass
class PublishResult:
    version: int | None
    profiles_upserted: int = 0
    profiles_deleted: int = 0
    recommendations_upserted: int = 0
    products_upserted: int = 0
    serialize_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def rows_published(self) -> int:
        return self.profiles_upserted + self.recommendations_upserted + self.products_upserted

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "profiles_upserted": self.profiles_upserted,
            "profiles_deleted": self.profiles_deleted,
            "recommendations_upserted": self.recommendations_upserted,
            "products_upserted": self.products_upserted,
            "serialize_seconds": round(self.serialize_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
        }


def profile_rows(bodies: Iterable[tuple], cycle_id: str, version: int) -> list[dict[str, Any]]:
    """(customer_id, email, body, etag) -> store rows with the email's lookup hash."""
    email_hash = store.email_hash
    return [
        {
            "customer_id": cid,
            "email_hash": email_hash(email),
            "body": body,
            "etag": tag,
            "cycle_id": cycle_id,
            "version": version,
        }
        for cid, email, body, tag in bodies
    ]


def _executemany(conn: Any, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """Run SQLAlchemy's upsert for many rows: the statement SQLAlchemy compiled for the dialect
    goes straight to the driver's executemany (sqlite3: one prepared statement; psycopg 3:
    pipeline mode). SQLAlchemy's own parameter batching costs several times the write itself at
    100,000 rows (bench/publish.py, docs/pipeline.md)."""
    compiled = stmt.compile(dialect=conn.dialect)
    sql = str(compiled)
    if compiled.positional:
        order = compiled.positiontup
        params: Any = lambda chunk: [tuple(r[k] for k in order) for r in chunk]  # noqa: E731
    else:
        params = lambda chunk: chunk  # noqa: E731 - named parameters: the dicts as they are
    for start in range(0, len(rows), _CHUNK):
        conn.exec_driver_sql(sql, params(rows[start : start + _CHUNK]))


def publish(
    engine: Engine,
    changes: Changes,
    *,
    cycle_id: str,
    as_of: datetime,
    newest_ingested_at: datetime | None,
    force_version: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> PublishResult:
    """Upsert the changed rows and delete erased customers in ONE transaction, then record the
    version. Nothing new (no changed rows, no newer ingestion) records no version.

    `before_commit` runs inside the transaction, after every write and before the version row
    and the commit (the crash-safety tests pause there to kill the process)."""
    store_version = store.current_version(engine)
    newest_text = iso_z(newest_ingested_at)
    newer_ingest = newest_text is not None and (
        store_version is None or (store_version.get("newest_ingested_at") or "") < newest_text
    )
    erased = changes.erased_ids
    contract_sum = checksum(changes.contracts)
    new_contract = store.contracts_checksum(engine) != contract_sum
    if changes.empty and not newer_ingest and not force_version and not new_contract and store_version is not None:
        return PublishResult(version=None)

    started = time.perf_counter()
    with engine.connect() as probe:
        version = store.next_version(probe)
    profile_batch = profile_rows(changes.profile_bodies, cycle_id, version)
    rec_batch = [
        {"customer_id": cid, "body": body, "cycle_id": cycle_id} for cid, body in changes.recommendation_bodies
    ]
    product_batch = [{"product_id": pid, "body": body, "cycle_id": cycle_id} for pid, body in changes.product_bodies]
    serialized = time.perf_counter()

    with engine.begin() as conn:
        # the home's cycle lock makes this the only publisher; this check turns a violation of
        # that rule (two homes on one PostgreSQL store) into an error instead of a lost version
        if store.next_version(conn) != version:
            raise StoreError("another process published concurrently; the cycle lock should prevent this")
        if profile_batch:
            _executemany(conn, store.upsert_statement(conn, store.profiles, ["customer_id"]), profile_batch)
        if rec_batch:
            _executemany(conn, store.upsert_statement(conn, store.recommendations, ["customer_id"]), rec_batch)
        if product_batch:
            _executemany(conn, store.upsert_statement(conn, store.products, ["product_id"]), product_batch)
        to_delete = list(erased)
        if changes.all_profile_ids is not None:
            # a full rebuild: a stored profile the warehouse no longer has is gone too
            stored = {
                r[0] for r in conn.execute(store.profiles.select().with_only_columns(store.profiles.c.customer_id))
            }
            to_delete += sorted(stored - changes.all_profile_ids - set(erased))
        deleted = store.delete_profiles(conn, to_delete)
        if new_contract:
            store.write_contracts(conn, to_json(changes.contracts), contract_sum)
        if before_commit is not None:
            before_commit()
        conn.execute(
            insert(store.published_versions).values(
                version=version,
                cycle_id=cycle_id,
                as_of=iso_z(as_of),
                published_at=iso_z(utcnow()),
                newest_ingested_at=newest_text or (store_version or {}).get("newest_ingested_at"),
                profiles_upserted=len(profile_batch),
                profiles_deleted=deleted,
            )
        )
    return PublishResult(
        version=version,
        profiles_upserted=len(profile_batch),
        profiles_deleted=deleted,
        recommendations_upserted=len(rec_batch),
        products_upserted=len(product_batch),
        serialize_seconds=serialized - started,
        write_seconds=time.perf_counter() - serialized,
    )


def lake_newest_ingested_at(lake_dir: Path) -> datetime | None:
    """Newest `_ingested_at` among the lake's files, from their names (a batch id starts with
    the UTC time the batch started; pipeline/lake_files.py). Read before dbt runs: every file
    present then is processed by that build, so the value is a safe lower bound of what the
    published state reflects."""
    return lake_files.newest_ingested_at(lake_dir)
