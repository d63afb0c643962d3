"""Publish: the warehouse's changed rows -> bodies serialized once -> one upsert transaction.

Reads the served marts with the `duckdb` module (never through SQLAlchemy: ../shared/STACK.md),
read-only, and closes the file at once so dbt can write it again. Only rows with
`_cycle_id > <last published cycle id>` are read, so a cycle whose validation failed, or that was
killed after dbt, is published by the next good cycle (docs/architecture.md).

The profile body is the API's response, built here once: fields in DESIGN.md's order,
timestamps ISO-8601 UTC with `Z`, money as a JSON number with exactly 2 decimals, lists as `[]`.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
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
_TIMESTAMPS = {"first_seen_at", "last_seen_at", "last_order_at"}
_MONEY = {"lifetime_value", "price"}
_LISTS = {"recently_viewed", "cart", "top_categories", "recommendations"}

# SQLite caps bound parameters per statement; executemany sends one row per execution, but
# chunking keeps the memory of one batch of parameter dicts bounded at any size
_CHUNK = 20_000


# ------------------------------------------------------------------------------ serialization

def _money(value: Any) -> bytes:
    # DECIMAL(18,2) arrives as Decimal; format, never float(), so 12.50 stays 12.50
    return b"null" if value is None else f"{value if isinstance(value, Decimal) else Decimal(str(value)):.2f}".encode()


def _timestamp(value: Any) -> bytes:
    return b"null" if value is None else b'"' + iso_z(value).encode() + b'"'


def _list(value: Any) -> bytes:
    return orjson.dumps(list(value) if value is not None else [])


def _plain(value: Any) -> bytes:
    return orjson.dumps(value)


def _encoders(names: Sequence[str]) -> list[tuple[bytes, Callable[[Any], bytes]]]:
    out = []
    for name in names:
        enc = _money if name in _MONEY else _timestamp if name in _TIMESTAMPS else _list if name in _LISTS else _plain
        out.append((orjson.dumps(name) + b":", enc))
    return out


def _serializer(names: Sequence[str]) -> Callable[[Sequence[Any]], str]:
    """Row tuple in `names` order -> JSON object text, built by hand so money keeps 2 decimals."""
    encoders = _encoders(names)

    def serialize(row: Sequence[Any]) -> str:
        return (b"{" + b",".join(key + enc(value) for (key, enc), value in zip(encoders, row)) + b"}").decode()

    return serialize


serialize_profile = _serializer(PROFILE_FIELDS)
serialize_product = _serializer(PRODUCT_FIELDS)


def serialize_recommendations(rows: Iterable[Sequence[Any]]) -> str:
    """(product_id, score, reason) tuples in rank order -> the JSON list stored per customer."""
    return orjson.dumps([
        {"product_id": product_id, "score": None if score is None else round(float(score), 6), "reason": reason}
        for product_id, score, reason in rows
    ]).decode()


def etag(body: str) -> str:
    """A strong validator of the body: same bytes, same etag (the API quotes it)."""
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


# ------------------------------------------------------------------------------ reading changes

@dataclass
class Changes:
    """The rows the cycle changed, read from the warehouse: tuples in the *_FIELDS order."""

    since: str | None
    profiles: list[tuple] = field(default_factory=list)
    # every recommendation row (rank order) of the customers whose profile or recommendations changed
    recommendations: list[tuple] = field(default_factory=list)
    # customer ids whose recommendations body must be rewritten (may have no rows: body `[]`)
    recommendation_customers: list[str] = field(default_factory=list)
    products: list[tuple] = field(default_factory=list)
    # customers erased since the last publish who have no profile any more
    erasures: list[tuple] = field(default_factory=list)
    # recommended product ids that are in stock in the current catalog (for validation)
    in_stock_product_ids: set[str] = field(default_factory=set)
    # every profile key in the warehouse, read on a full refresh to drop what vanished
    all_profile_ids: set[str] | None = None

    @property
    def rows_read(self) -> int:
        return len(self.profiles) + len(self.recommendations) + len(self.products) + len(self.erasures)

    @property
    def rows_changed(self) -> int:
        return len(self.profiles) + len(self.recommendation_customers) + len(self.products) + len(self.erasures)

    @property
    def empty(self) -> bool:
        return not (self.profiles or self.recommendation_customers or self.products or self.erasures)


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


_TOUCHED = """
with t as (
    select customer_id from (
        select customer_id from customer_recommendations where _cycle_id > $1
        union
        select customer_id from customer_profiles where _cycle_id > $1
    ) c
    where exists (select 1 from customer_profiles p where p.customer_id = c.customer_id)
)
"""


def read_changes(warehouse_path: Path, since: str | None, *, all_keys: bool = False) -> Changes:
    """Rows of the served marts written after cycle `since` (all rows when None)."""
    import duckdb  # the cycle's process only; the API never imports or opens the warehouse

    if not Path(warehouse_path).exists():
        raise StoreError(f"no warehouse at {warehouse_path}: run a cycle (dbt build) first")
    after = since or ""
    con = duckdb.connect(str(warehouse_path), read_only=True)
    try:
        profile_cols = _require(con, "customer_profiles", [f for f in PROFILE_FIELDS if f != "recommendations"] + ["_cycle_id"])
        _require(con, "customer_recommendations", list(RECOMMENDATION_FIELDS) + ["_cycle_id"])
        _require(con, "products", list(PRODUCT_FIELDS) + ["_cycle_id"])
        _require(con, "customer_erasures", ["customer_id", "erased_at", "_cycle_id"])

        # the profile's `recommendations` field: the mart's column when it has one, else the
        # product ids of customer_recommendations in rank order (the same contract)
        if "recommendations" in profile_cols:
            recs_expr = "coalesce(p.recommendations, [])"
            recs_join = ""
        else:
            recs_expr = "coalesce(r.ids, [])"
            recs_join = ("left join (select customer_id, list(product_id order by rank) as ids "
                         "from customer_recommendations group by customer_id) r using (customer_id)")
        select_list = ", ".join(
            recs_expr if f == "recommendations" else
            f"coalesce(p.{f}, [])" if f in _LISTS else f"p.{f}"
            for f in PROFILE_FIELDS
        )
        changes = Changes(since=since)
        changes.profiles = con.execute(
            f"select {select_list} from customer_profiles p {recs_join} where p._cycle_id > ? order by p.customer_id",
            [after],
        ).fetchall()
        # customers whose profile or recommendations changed and who still have a profile
        changes.recommendation_customers = [r[0] for r in con.execute(
            f"{_TOUCHED} select customer_id from t order by customer_id", [after]).fetchall()]
        changes.recommendations = con.execute(
            f"""{_TOUCHED}
            select r.customer_id, r.rank, r.product_id, r.score, r.reason
            from customer_recommendations r join t using (customer_id)
            order by r.customer_id, r.rank
            """,
            [after],
        ).fetchall()
        changes.products = con.execute(
            f"select {', '.join(PRODUCT_FIELDS)} from products where _cycle_id > ? order by product_id", [after],
        ).fetchall()
        changes.erasures = con.execute(
            """
            select e.customer_id, e.erased_at from customer_erasures e
            where e._cycle_id > ?
              and not exists (select 1 from customer_profiles p where p.customer_id = e.customer_id)
            order by e.customer_id
            """,
            [after],
        ).fetchall()
        if changes.recommendations:
            changes.in_stock_product_ids = {
                r[0] for r in con.execute("select product_id from products where in_stock").fetchall()
            }
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


def profile_rows(profiles: Iterable[Sequence[Any]], cycle_id: str, version: int) -> list[dict[str, Any]]:
    """Serialize each profile once: body, etag and email hash, ready for executemany."""
    email_at = PROFILE_FIELDS.index("email")
    out = []
    for row in profiles:
        body = serialize_profile(row)
        out.append({
            "customer_id": row[0], "email_hash": store.email_hash(row[email_at]), "body": body,
            "etag": etag(body), "cycle_id": cycle_id, "version": version,
        })
    return out


def recommendation_rows(changes: Changes, cycle_id: str) -> list[dict[str, Any]]:
    by_customer: dict[str, list[tuple]] = {cid: [] for cid in changes.recommendation_customers}
    for customer_id, _rank, product_id, score, reason in changes.recommendations:
        if customer_id in by_customer:
            by_customer[customer_id].append((product_id, score, reason))
    return [
        {"customer_id": cid, "body": serialize_recommendations(items), "cycle_id": cycle_id}
        for cid, items in by_customer.items()
    ]


def product_rows(products: Iterable[Sequence[Any]], cycle_id: str) -> list[dict[str, Any]]:
    return [{"product_id": row[0], "body": serialize_product(row), "cycle_id": cycle_id} for row in products]


def _executemany(conn: Any, stmt: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _CHUNK):
        conn.execute(stmt, rows[start:start + _CHUNK])


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
    erased = [row[0] for row in changes.erasures]
    if changes.empty and not newer_ingest and not force_version and store_version is not None:
        return PublishResult(version=None)

    started = time.perf_counter()
    with engine.connect() as probe:
        version = store.next_version(probe)
    profile_batch = profile_rows(changes.profiles, cycle_id, version)
    rec_batch = recommendation_rows(changes, cycle_id)
    product_batch = product_rows(changes.products, cycle_id)
    serialized = time.perf_counter()

    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # take the write lock now, so the version number read above cannot be raced
            conn.exec_driver_sql("select 1")
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
