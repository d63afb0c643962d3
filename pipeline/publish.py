"""Publish: the warehouse's changed rows -> bodies serialized once -> one upsert transaction.

Reads the served marts with the `duckdb` module (never through SQLAlchemy: ../shared/STACK.md),
read-only, and closes the file at once so dbt can write it again. Only rows with
`_cycle_id > <last published cycle id>` are read, so a cycle whose validation failed, or that was
killed after dbt, is published by the next good cycle (docs/architecture.md).

The profile body is the API's response, built once per change: fields in DESIGN.md's order,
timestamps ISO-8601 UTC with `Z` (fraction only when non-zero, as `pipeline.ids.iso_z`), money as
a JSON number with exactly 2 decimals (`12.50`), lists as `[]`, unknowns as null. DuckDB builds
the JSON text, its md5 (the etag) and the check columns of validation in one vectorized query:
at 100,000 profiles, converting lists to Python objects alone cost more than the whole publish
budget (bench/publish.py; docs/pipeline.md). tests/test_publish.py checks every body against an
independent Python serializer.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert

from pipeline import store
from pipeline.errors import StoreError
from pipeline.ids import iso_z, utcnow

# DESIGN.md "Mart contract: the customer profile", in its order: the order of the JSON body
PROFILE_FIELDS: tuple[str, ...] = (
    "customer_id", "email", "first_name", "last_name", "country", "locale", "timezone",
    "marketing_consent", "first_seen_at", "last_seen_at", "orders_count", "lifetime_value",
    "last_order_at", "lifecycle_stage", "recently_viewed", "cart", "top_categories", "recommendations",
)
PRODUCT_FIELDS: tuple[str, ...] = (
    "product_id", "name", "category", "price", "currency", "url", "image_url", "in_stock",
)
RECOMMENDATION_FIELDS: tuple[str, ...] = ("customer_id", "rank", "product_id", "score", "reason")
TIMESTAMP_FIELDS = frozenset({"first_seen_at", "last_seen_at", "last_order_at"})
MONEY_FIELDS = frozenset({"lifetime_value", "price"})
LIST_FIELDS = frozenset({"recently_viewed", "cart", "top_categories", "recommendations"})
# the scalar columns validation sees (lists are checked through derived check_* columns)
PROFILE_FRAME_FIELDS = tuple(f for f in PROFILE_FIELDS if f not in LIST_FIELDS)

# SQLite caps bound parameters per statement; executemany sends one row per execution, but
# chunking keeps the memory of one batch of parameter dicts bounded at any size
_CHUNK = 20_000


# ------------------------------------------------------------------------------ JSON built by DuckDB

def _json_value_sql(column: str, name: str) -> str:
    if name in MONEY_FIELDS:
        # DECIMAL(18,2) as text keeps both decimals: 12.50, 0.00
        return f"coalesce(cast(cast({column} as decimal(18,2)) as varchar), 'null')"
    if name in TIMESTAMP_FIELDS:
        # iso_z: the fraction only when non-zero
        return (f"""coalesce('"' || replace(strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ'), '.000000Z', 'Z') || '"',"""
                f""" 'null')""")
    if name in LIST_FIELDS:
        return f"coalesce(to_json({column})::varchar, '[]')"
    return f"coalesce(to_json({column})::varchar, 'null')"


def json_object_sql(names: Iterable[str], alias: str) -> str:
    """A DuckDB expression building the JSON object text of `names`, in that order."""
    parts = [f"'{json.dumps(n)}:' || {_json_value_sql(f'{alias}.{n}', n)}" for n in names]
    return "'{' || " + " || ',' || ".join(parts) + " || '}'"


def etag(body: str) -> str:
    """md5 hex of the body's UTF-8 bytes: DuckDB's md5(body), the value stored with each profile."""
    return hashlib.md5(body.encode("utf-8")).hexdigest()  # noqa: S324 - a cache validator, not security


# ------------------------------------------------------------------------------ reading changes

@dataclass
class Changes:
    """What the cycle changed in the warehouse: frames for validation, bodies for publishing."""

    since: str | None
    # scalar profile columns + check_* columns (pipeline/validate.py) of the changed profiles
    profiles: pd.DataFrame = field(default_factory=pd.DataFrame)
    # (customer_id, email, body, etag) of the changed profiles
    profile_bodies: list[tuple] = field(default_factory=list)
    # every recommendation row of the customers whose profile or recommendations changed
    recommendations: pd.DataFrame = field(default_factory=pd.DataFrame)
    # (customer_id, body) for those customers; `[]` when they have none any more
    recommendation_bodies: list[tuple] = field(default_factory=list)
    products: pd.DataFrame = field(default_factory=pd.DataFrame)
    product_bodies: list[tuple] = field(default_factory=list)
    # customers erased since the last publish who have no profile any more
    erasures: pd.DataFrame = field(default_factory=pd.DataFrame)
    # every profile key in the warehouse, read on a full refresh to drop what vanished
    all_profile_ids: set[str] | None = None

    @property
    def rows_read(self) -> int:
        return len(self.profiles) + len(self.recommendations) + len(self.products) + len(self.erasures)

    @property
    def rows_changed(self) -> int:
        return len(self.profile_bodies) + len(self.recommendation_bodies) + len(self.product_bodies) + len(self.erasures)

    @property
    def erased_ids(self) -> list[str]:
        return [] if self.erasures.empty else self.erasures["customer_id"].tolist()

    @property
    def empty(self) -> bool:
        return not (self.profile_bodies or self.recommendation_bodies or self.product_bodies or len(self.erasures))


def _columns(con: Any, table: str) -> set[str]:
    rows = con.execute(
        "select column_name from information_schema.columns where table_schema = 'main' and table_name = ?",
        [table],
    ).fetchall()
    return {r[0] for r in rows}


def _require(con: Any, table: str, names: Iterable[str]) -> set[str]:
    have = _columns(con, table)
    if not have:
        raise StoreError(f"the warehouse has no mart {table!r}: run a cycle (dbt build) first")
    missing = [n for n in names if n not in have]
    if missing:
        raise StoreError(f"mart {table} lacks columns {', '.join(missing)} (docs/architecture.md)")
    return have


# customers whose profile or recommendations changed since $since and who still have a profile
_TOUCHED = """
t as (
    select customer_id from (
        select customer_id from customer_recommendations where _cycle_id > $since
        union
        select customer_id from customer_profiles where _cycle_id > $since
    ) c
    where exists (select 1 from customer_profiles p where p.customer_id = c.customer_id)
)"""


def _values(column: pd.Series) -> list[Any]:
    # pandas 3 strings hold a missing value as NaN: hand Python None to the store
    return column.astype(object).where(column.notna(), None).tolist()


def _split(frame: pd.DataFrame, body_columns: list[str]) -> tuple[pd.DataFrame, list[tuple]]:
    bodies = list(zip(*(_values(frame[c]) for c in body_columns))) if len(frame) else []
    return frame.drop(columns=[c for c in ("body", "etag") if c in frame.columns]), bodies


def read_changes(warehouse_path: Path, since: str | None, as_of: datetime, *, all_keys: bool = False) -> Changes:
    """The rows of the served marts written after cycle `since` (all rows when None), with their
    JSON bodies and the check columns validation needs (`as_of`: the cycle's reference time)."""
    import duckdb  # the cycle's process only; the API never imports or opens the warehouse

    from pipeline.validate import profile_checks_sql, recommendation_checks_sql

    if not Path(warehouse_path).exists():
        raise StoreError(f"no warehouse at {warehouse_path}: run a cycle (dbt build) first")
    params = {"since": since or "", "as_of": as_of}
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        profile_cols = _require(con, "customer_profiles",
                                [f for f in PROFILE_FIELDS if f != "recommendations"] + ["_cycle_id"])
        _require(con, "customer_recommendations", list(RECOMMENDATION_FIELDS) + ["_cycle_id"])
        _require(con, "products", list(PRODUCT_FIELDS) + ["_cycle_id"])
        _require(con, "customer_erasures", ["customer_id", "erased_at", "_cycle_id"])

        # the profile's `recommendations` field: the mart's column when it has one, else the
        # product ids of customer_recommendations in rank order (the same contract)
        if "recommendations" in profile_cols:
            changed = ("select * replace (coalesce(recommendations, []) as recommendations) "
                       "from customer_profiles where _cycle_id > $since")
        else:
            changed = ("select p.*, coalesce(r.ids, []) as recommendations from customer_profiles p "
                       "left join (select customer_id, list(product_id order by rank) as ids "
                       "from customer_recommendations group by customer_id) r using (customer_id) "
                       "where p._cycle_id > $since")
        checks = ", ".join(f"{expr} as {name}" for name, expr in profile_checks_sql().items())
        frame = con.execute(f"""
            with changed as ({changed}),
            bodies as (select *, {json_object_sql(PROFILE_FIELDS, 'changed')} as body from changed)
            select {', '.join(PROFILE_FRAME_FIELDS)}, {checks}, body, md5(body) as etag
            from bodies order by customer_id
        """, params).df()
        changes = Changes(since=since)
        changes.profiles, changes.profile_bodies = _split(frame, ["customer_id", "email", "body", "etag"])

        rec_checks = ", ".join(f"{expr} as {name}" for name, expr in recommendation_checks_sql().items())
        changes.recommendations = con.execute(f"""
            with {_TOUCHED}
            select r.customer_id, r.rank, r.product_id, r.score, r.reason, {rec_checks}
            from customer_recommendations r join t using (customer_id)
            left join products pr on pr.product_id = r.product_id
            order by r.customer_id, r.rank
        """, {"since": params["since"]}).df()
        changes.recommendation_bodies = con.execute(f"""
            with {_TOUCHED}
            select t.customer_id, coalesce(to_json(list(
                       {{'product_id': r.product_id, 'score': round(r.score, 6), 'reason': r.reason}} order by r.rank
                   ) filter (where r.customer_id is not null))::varchar, '[]')
            from t left join customer_recommendations r using (customer_id)
            group by t.customer_id order by t.customer_id
        """, {"since": params["since"]}).fetchall()

        frame = con.execute(f"""
            select {', '.join(PRODUCT_FIELDS)}, {json_object_sql(PRODUCT_FIELDS, 'products')} as body
            from products where _cycle_id > $since order by product_id
        """, {"since": params["since"]}).df()
        changes.products, changes.product_bodies = _split(frame, ["product_id", "body"])
        changes.erasures = con.execute("""
            select e.customer_id, e.erased_at from customer_erasures e
            where e._cycle_id > $since
              and not exists (select 1 from customer_profiles p where p.customer_id = e.customer_id)
            order by e.customer_id
        """, {"since": params["since"]}).df()
        if all_keys:
            changes.all_profile_ids = {r[0] for r in con.execute("select customer_id from customer_profiles").fetchall()}
    finally:
        con.close()
    return changes


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
            "version": self.version, "profiles_upserted": self.profiles_upserted,
            "profiles_deleted": self.profiles_deleted, "recommendations_upserted": self.recommendations_upserted,
            "products_upserted": self.products_upserted, "serialize_seconds": round(self.serialize_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
        }


def profile_rows(bodies: Iterable[tuple], cycle_id: str, version: int) -> list[dict[str, Any]]:
    """(customer_id, email, body, etag) -> store rows with the email's lookup hash."""
    email_hash = store.email_hash
    return [{"customer_id": cid, "email_hash": email_hash(email), "body": body, "etag": tag,
             "cycle_id": cycle_id, "version": version} for cid, email, body, tag in bodies]


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
        conn.exec_driver_sql(sql, params(rows[start:start + _CHUNK]))


def publish(engine: Engine, changes: Changes, *, cycle_id: str, as_of: datetime,
            newest_ingested_at: datetime | None, force_version: bool = False,
            before_commit: Callable[[], None] | None = None) -> PublishResult:
    """Upsert the changed rows and delete erased customers in ONE transaction, then record the
    version. Nothing new (no changed rows, no newer ingestion) records no version.

    `before_commit` runs inside the transaction, after every write and before the version row
    and the commit (the crash-safety tests pause there to kill the process)."""
    store_version = store.current_version(engine)
    newest_text = iso_z(newest_ingested_at)
    newer_ingest = newest_text is not None and (
        store_version is None or (store_version.get("newest_ingested_at") or "") < newest_text)
    erased = changes.erased_ids
    if changes.empty and not newer_ingest and not force_version and store_version is not None:
        return PublishResult(version=None)

    started = time.perf_counter()
    with engine.connect() as probe:
        version = store.next_version(probe)
    profile_batch = profile_rows(changes.profile_bodies, cycle_id, version)
    rec_batch = [{"customer_id": cid, "body": body, "cycle_id": cycle_id} for cid, body in changes.recommendation_bodies]
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
            stored = {r[0] for r in conn.execute(store.profiles.select().with_only_columns(store.profiles.c.customer_id))}
            to_delete += sorted(stored - changes.all_profile_ids - set(erased))
        deleted = store.delete_profiles(conn, to_delete)
        if before_commit is not None:
            before_commit()
        conn.execute(insert(store.published_versions).values(
            version=version, cycle_id=cycle_id, as_of=iso_z(as_of), published_at=iso_z(utcnow()),
            newest_ingested_at=newest_text or (store_version or {}).get("newest_ingested_at"),
            profiles_upserted=len(profile_batch), profiles_deleted=deleted,
        ))
    return PublishResult(
        version=version, profiles_upserted=len(profile_batch), profiles_deleted=deleted,
        recommendations_upserted=len(rec_batch), products_upserted=len(product_batch),
        serialize_seconds=serialized - started, write_seconds=time.perf_counter() - serialized,
    )


def lake_newest_ingested_at(lake_dir: Path) -> datetime | None:
    """Newest `_ingested_at` among the lake's files, from their names (a batch id starts with
    the UTC time the batch started). Read before dbt runs: every file present then is processed
    by that build, so the value is a safe lower bound of what the published state reflects."""
    newest: str | None = None
    if not lake_dir.is_dir():
        return None
    for _root, _dirs, files in os.walk(lake_dir):
        for name in files:
            if name.startswith(".") or not name.endswith(".parquet"):
                continue  # temporary files being written are not in the lake yet
            stamp = name.split("-", 1)[0]
            if newest is None or stamp > newest:
                newest = stamp
    if newest is None:
        return None
    try:
        return datetime.strptime(newest, "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return None
