"""Erasure everywhere (DESIGN.md "Privacy and access"; docs/privacy.md "Erasure").

`sendtime forget CUSTOMER_ID` (`request_forget`) and a CRM delete (`request_crm_deletes`, after the
publish that removed the profile) record a request in the erasure register. The next cycle runs
`run_pending` before dbt:

1. the lake index catches up with the files that arrived (pipeline/lake_index.py); a file that holds
   an erased customer's records again (a restore, a replay) schedules their erasure again, and a
   CRM-deleted customer's later records get the delete kept in force (a tombstone);
2. old quarantine files go (`quarantine_retention_days`, pipeline/retention.py);
3. the plan: from the index, the files that hold the customer; from those files, the devices linked
   to them (earliest link wins, as in stitching), their orders and their email, and the files that
   hold those. Only these files are read;
4. the lake and quarantine files are rewritten without the erased records (write a new file, fsync,
   rename: a reader sees the old file or the new one, a crash loses nothing else). Records that
   stay but whose derived rows change are moved to one new lake batch (the customer's later
   records, another customer's event that carries a linked device, an order's other changes), so
   dbt derives them again from a clean slate;
5. every warehouse table loses the rows of those customers, devices, orders and events (by column
   name: pipeline/warehouse.py `WarehouseErasure`); the moved batch brings back what stays;
6. the online store loses the profile, the recommendations and the collector's idempotency records
   of the erased events (SQLite with secure_delete, then a WAL checkpoint);
7. the register records the request done; the plaintext of the request and of the plan is removed.

What a cycle rewrites follows the files that hold the customers, never the lake's size. Each step is
idempotent and the plan is kept (`erasure/inflight.*`) until the request is done, so a cycle killed
anywhere in it finishes the erasure in the next cycle.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import erasure_copies, retention, store
from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.contracts import lake_schema
from pipeline.encryption import AtRest, at_rest
from pipeline.erasure_register import (
    KEY,
    Register,
    Snapshot,
    check_id,
    epoch_ms,
    register_for,
)
from pipeline.erasure_rules import (
    IDENTIFIERS,
    TOMBSTONE_SOURCE,
    HashLookup,
    PlainLookup,
    erasable,
    normalize,
    raw_erasable,
)
from pipeline.ids import new_batch_id
from pipeline.lake_index import DataFile, LakeIndex
from pipeline.lake_writer import (
    QUARANTINE_SCHEMA,
    LakeFileWriter,
    conform,
    iter_parquet,
    read_parquet_table,
    read_quarantine,
    write_jsonl_file,
    write_parquet_file,
)
from pipeline.logs import get_logger
from pipeline.timestamps import parse_timestamp
from pipeline.warehouse import WarehouseErasure, warehouse_for

log = get_logger(__name__)

PENDING = "pending"
INFLIGHT = "inflight"
# the columns of the lake that order records in ingestion order (docs/architecture.md)
_ORDER = [("_ingested_at", "ascending"), ("_batch_id", "ascending"), ("_source_line", "ascending")]


# --------------------------------------------------------------------------- plaintext side files


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    settings.erasure_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.erasure_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _side_path(settings: Settings, name: str, key: AtRest | None) -> Path:
    return settings.erasure_dir / (f"{name}.parquet" if key is not None else f"{name}.json")


def _read_side(settings: Settings, name: str) -> Any:
    """A small JSON document kept under erasure/ while a request is open: encrypted Parquet when the
    home is encrypted (it holds customer ids), else JSON. None when there is none."""
    key = at_rest(settings)
    path = _side_path(settings, name, key)
    if not path.exists():
        return None
    if key is not None:
        return orjson.loads(read_parquet_table(path, key).column("body")[0].as_py())
    return orjson.loads(path.read_bytes())


def _write_side(settings: Settings, name: str, document: Any) -> None:
    key = at_rest(settings)
    path = _side_path(settings, name, key)
    if document is None:
        if path.exists():
            path.unlink()
        return
    body = orjson.dumps(document)
    if key is not None:
        table = pa.table({"body": [body.decode()]})
        write_parquet_file(path, iter([table]), table.schema, key)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _add_pending(settings: Settings, ids: dict[str, str]) -> None:
    """Keep the plaintext of open requests (hash -> id) until they are done: the cycle then finds
    the customer's rows without hashing every id of the files that hold them."""
    with _locked(settings):
        pending = _read_side(settings, PENDING) or {}
        pending.update(ids)
        _write_side(settings, PENDING, pending)


# --------------------------------------------------------------------------- requests


@dataclass
class ForgetResult:
    customer_id: str
    status: str
    files: int  # lake and quarantine files that hold records of the id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def request_forget(settings: Settings, customer_ids: list[str]) -> list[ForgetResult]:
    """`sendtime forget`: record the requests (an unknown id too: its later arrival is erased);
    report how many files hold each id now (the next cycle erases them)."""
    ids = [check_id(cid) for cid in customer_ids]
    at_rest(settings)  # a wrong key is an error before anything is recorded
    register = register_for(settings)
    hashes = register.request(ids, reason="forget")
    _add_pending(settings, dict(zip(hashes, ids)))
    hasher = register.hasher
    with LakeIndex(settings, hasher) as index:
        index.catch_up()
        found = {h: len(index.files_for([h])) for h in hashes}
    snapshot = register.snapshot()
    return [ForgetResult(cid, snapshot.status(h) or "pending", found[h]) for cid, h in zip(ids, hashes)]


def forget_status(settings: Settings, customer_id: str) -> str | None:
    """complete, pending, or None when no erasure of this id was ever requested."""
    return register_for(settings).status(check_id(customer_id))


def request_crm_deletes(settings: Settings, deletes: Iterable[tuple[str, datetime]]) -> int:
    """CRM deletes the cycle just published (their profiles answer 404 already) become erasure
    requests: erase everything of the customer up to the delete's time."""
    register = register_for(settings)
    by_time: dict[int, list[str]] = {}
    for customer_id, erased_at in deletes:
        if isinstance(customer_id, str) and 1 <= len(customer_id) <= 255 and erased_at is not None:
            by_time.setdefault(epoch_ms(erased_at), []).append(customer_id)
    added = 0
    for at, ids in sorted(by_time.items()):
        before = register.snapshot()
        hashes = register.request(ids, reason="crm_delete", at=at)
        after = register.snapshot()
        new = {h: cid for h, cid in zip(hashes, ids) if after.status(h) == "pending"}
        added += sum(1 for h in new if before.status(h) != "pending" or h not in before.requests)
        if new:
            _add_pending(settings, new)
    return added


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What one erasure removes, in plaintext (kept in erasure/inflight.* until it is done)."""

    requests: dict[str, int]  # customer hash -> erase their records up to (epoch ms)
    erase: dict[str, dict[str, int]]  # kind -> {identifier: erase up to}
    owners: dict[str, dict[str, str]]  # kind -> {identifier: the customer hash it belongs to}
    move_anonymous_ids: list[str]  # linked devices: their events that stay are derived again
    move_order_ids: list[str]  # the customers' orders: their changes and items that stay, too
    files: list[list[str]]  # [path relative to the home, area, source] of every file to read
    moved_batches: list[str] = field(default_factory=list)  # the batch(es) of moved records, once written
    tombstones: dict[str, int] = field(default_factory=dict)  # customer id -> CRM delete kept in force

    @property
    def customer_ids(self) -> dict[str, int]:
        return self.erase.get("customer_id", {})


def _read_columns(data: DataFile, key: AtRest | None, columns: list[str]) -> pa.Table:
    return read_parquet_table(data.path, key, columns)


def _isin(table: pa.Table, column: str, values: Iterable[str]) -> pa.Array:
    values = list(values)
    if not values or column not in table.column_names:
        return pa.array([False] * table.num_rows, pa.bool_())
    return pc.fill_null(pc.is_in(table.column(column), pa.array(values, pa.string())), False)


def _resolve(
    data: DataFile,
    key: AtRest | None,
    register: Register,
    wanted: dict[tuple[str, str], int],
    owners: dict[tuple[str, str], str],
    erase: dict[str, dict[str, int]],
    owned: dict[str, dict[str, str]],
) -> None:
    """The slow path, when the plaintext was not kept (a re-erasure after a restore): hash a
    file's identifiers to find the values of the wanted hashes."""
    if data.area != "lake":
        return  # quarantine records are matched by the identifiers found in the lake
    hasher = register.hasher
    for kind in IDENTIFIERS.get(data.source, ()):
        table = _read_columns(data, key, [kind])
        if kind not in table.column_names:
            continue
        for value in pc.unique(table.column(kind)).to_pylist():
            if value is None:
                continue
            value = normalize(kind, value)
            h = hasher.hex(kind, value)
            until = wanted.get((kind, h))
            if until is not None:
                erase[kind][value] = max(until, erase[kind].get(value, until))
                owned[kind][value] = owners[(kind, h)]


def make_plan(
    settings: Settings,
    index: LakeIndex,
    register: Register,
    snapshot: Snapshot,
    requests: dict[str, int],
    known: dict[str, str],
) -> Plan:
    """The identifiers to erase and the files to read, from the index: only files that hold them."""
    key = at_rest(settings)
    hasher = register.hasher
    kinds = ("customer_id", "anonymous_id", "order_id", "email")
    erase: dict[str, dict[str, int]] = {k: {} for k in kinds}
    owned: dict[str, dict[str, str]] = {k: {} for k in kinds}
    wanted: dict[tuple[str, str], int] = {}
    owners: dict[tuple[str, str], str] = {}
    for h, until in requests.items():
        if h in known:
            erase["customer_id"][known[h]] = until
            owned["customer_id"][known[h]] = h
        else:
            wanted[("customer_id", h)], owners[("customer_id", h)] = until, h
    # what an earlier erasure of them found (a restore brings their devices' events back too)
    for (kind, h2), owner in snapshot.owner.items():
        if owner in requests and kind != "customer_id":
            wanted[(kind, h2)], owners[(kind, h2)] = requests[owner], owner
    files = {f.path: f for f in index.files_for(list(requests) + [h for (_k, h) in wanted])}
    if wanted:
        for data in list(files.values()):
            _resolve(data, key, register, wanted, owners, erase, owned)
    customers = erase["customer_id"]
    hash_of = {cid: owned["customer_id"][cid] for cid in customers}

    # their devices, orders and emails, from the files that hold them
    devices: dict[str, str] = {}
    orders: dict[str, str] = {}
    for data in list(files.values()):
        if data.area != "lake" or not customers or data.source not in ("events", "orders", "customers"):
            continue
        other = {"events": "anonymous_id", "orders": "order_id", "customers": "email"}[data.source]
        table = _read_columns(data, key, ["customer_id", other])
        mine = table.filter(_isin(table, "customer_id", customers))
        for cid, value in zip(mine.column("customer_id").to_pylist(), mine.column(other).to_pylist()):
            if value is None or not str(value).strip():
                continue
            if data.source == "events":
                devices.setdefault(value, cid)
            elif data.source == "orders":
                orders.setdefault(value, cid)
            else:
                email = normalize("email", value)
                erase["email"][email] = customers[cid]
                owned["email"][email] = hash_of[cid]
    for kind, values in (("anonymous_id", devices), ("order_id", orders), ("email", erase["email"])):
        for data in index.files_for([hasher.hex(kind, v) for v in values]):
            files.setdefault(data.path, data)

    # a device is theirs when its earliest link is to them (DESIGN.md "Identity stitching"); an
    # order's items are erased with it only when every change of the order was theirs and erased
    links: dict[str, tuple[tuple[datetime, str], str]] = {}
    shared_orders: set[str] = set()
    for data in files.values():
        if data.area != "lake":
            continue
        if data.source == "events" and devices:
            table = _read_columns(data, key, ["event_id", "customer_id", "anonymous_id", "occurred_at"])
            table = table.filter(
                pc.and_(_isin(table, "anonymous_id", devices), pc.is_valid(table.column("customer_id")))
            )
            for eid, cid, anon, occurred in zip(
                *(table.column(c).to_pylist() for c in ("event_id", "customer_id", "anonymous_id", "occurred_at"))
            ):
                rank = (parse_timestamp(occurred) or datetime.max, eid or "")
                if anon not in links or rank < links[anon][0]:
                    links[anon] = (rank, cid)
        elif data.source == "orders" and orders:
            table = _read_columns(data, key, ["order_id", "customer_id", "ts_ms"])
            table = table.filter(_isin(table, "order_id", orders))
            for oid, cid, ts in zip(*(table.column(c).to_pylist() for c in ("order_id", "customer_id", "ts_ms"))):
                if cid not in customers or ts is None or ts > customers[cid]:
                    shared_orders.add(oid)
    for anon, (_rank, cid) in links.items():
        if cid in customers:
            erase["anonymous_id"][anon] = customers[cid]
            owned["anonymous_id"][anon] = hash_of[cid]
    for oid, cid in orders.items():
        if oid not in shared_orders:
            erase["order_id"][oid] = customers[cid]
            owned["order_id"][oid] = hash_of[cid]
    return Plan(
        requests=dict(requests),
        erase=erase,
        owners=owned,
        move_anonymous_ids=sorted(erase["anonymous_id"]),
        move_order_ids=sorted(orders),
        files=sorted([os.path.relpath(d.path, settings.home), d.area, d.source] for d in files.values()),
    )


# --------------------------------------------------------------------------- applying it


@dataclass
class ErasureReport:
    indexed_files: int = 0
    quarantine_files_expired: int = 0
    requests: int = 0
    files_read: int = 0
    files_rewritten: int = 0
    files_removed: int = 0
    records_erased: int = 0
    records_moved: int = 0
    tombstones: int = 0
    warehouse_rows: int = 0
    profiles_deleted: int = 0
    collector_ids_deleted: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mentions(source: str, table: pa.Table, plan: Plan) -> pa.Array:
    """Rows that name an erased customer, a linked device or one of their orders (erased or not)."""
    customers = plan.customer_ids
    if source == "events":
        return pc.or_(_isin(table, "customer_id", customers), _isin(table, "anonymous_id", plan.move_anonymous_ids))
    if source == "customers":
        return _isin(table, "customer_id", customers)
    if source == "orders":
        return pc.or_(_isin(table, "customer_id", customers), _isin(table, "order_id", plan.move_order_ids))
    if source == "order_items":
        return _isin(table, "order_id", plan.move_order_ids)
    return pa.array([False] * table.num_rows, pa.bool_())


@dataclass
class _Scan:
    """Pass 1 over the plan's lake files (read only): the records that move and what they name."""

    changed: set[str] = field(default_factory=set)
    moved: dict[str, list[pa.Table]] = field(default_factory=dict)
    moved_events: set[str] = field(default_factory=set)
    erased_events: set[str] = field(default_factory=set)
    kept_customers: set[str] = field(default_factory=set)


def _scan(settings: Settings, key: AtRest | None, plan: Plan, lookup: PlainLookup, report: ErasureReport) -> _Scan:
    scan = _Scan()
    for rel, area, source in plan.files:
        path = settings.home / rel
        if area != "lake" or rel in plan.moved_batches or not path.exists():
            continue
        report.files_read += 1
        for batch in iter_parquet(path, key):
            table = pa.Table.from_batches([batch])
            gone = erasable(source, table, lookup)
            move = pc.and_(_mentions(source, table, plan), pc.invert(gone))
            if not pc.any(pc.or_(gone, move)).as_py():
                continue
            scan.changed.add(rel)
            if source == "events" and pc.any(gone).as_py():
                scan.erased_events.update(v for v in table.filter(gone).column("event_id").to_pylist() if v)
            if pc.any(move).as_py():
                rows = table.filter(move)
                scan.moved.setdefault(source, []).append(rows)
                if source == "events":
                    scan.moved_events.update(v for v in rows.column("event_id").to_pylist() if v)
                if "customer_id" in rows.column_names:
                    scan.kept_customers.update(
                        c for c in rows.column("customer_id").to_pylist() if c in plan.customer_ids
                    )
    return scan


def _tombstone_rows(tombstones: dict[str, int]) -> pa.Table:
    """CRM deletes kept in force: a delete change of each customer at the time of their CRM delete,
    carrying nothing but the id (their later records stay, and so does the delete)."""
    schema = lake_schema("customers")
    rows = [
        {
            "op": "d",
            "ts_ms": at,
            "row_json": orjson.dumps({"customer_id": cid}).decode(),
            "customer_id": cid,
            "_source_file": TOMBSTONE_SOURCE,
            "_raw": orjson.dumps({"op": "d", "ts_ms": at, "before": {"customer_id": cid}, "after": None}).decode(),
        }
        for cid, at in sorted(tombstones.items())
    ]
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)


def write_moved(
    settings: Settings, key: AtRest | None, moved: dict[str, list[pa.Table]], tombstones: dict[str, int]
) -> list[str]:
    """One new lake batch per source with the moved records, in their original ingestion order
    (`_source_line` renumbered in that order; `_source_file` kept), and the tombstones."""
    written = []
    for source in sorted(set(moved) | ({"customers"} if tombstones else set())):
        schema = lake_schema(source)
        parts = [conform(p, schema) for p in moved.get(source, [])]
        table = pa.concat_tables(parts).sort_by(_ORDER) if parts else schema.empty_table()
        if source == "customers" and tombstones:
            table = pa.concat_tables([table, _tombstone_rows(tombstones)])
        if table.num_rows == 0:
            continue
        now = utcnow()
        batch_id = new_batch_id(now)
        n = table.num_rows
        for name, values in (
            ("_batch_id", pa.array([batch_id] * n, pa.string())),
            ("_ingested_at", pa.array([now] * n, pa.timestamp("us"))),
            ("_source_line", pa.array(range(1, n + 1), pa.int64())),
        ):
            table = table.set_column(schema.get_field_index(name), name, values)
        folder = settings.lake_dir / source / f"ingest_date={now:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        writer = LakeFileWriter(folder / f"{batch_id}.parquet", schema, at_rest=key)
        try:
            writer.write(table)
            path = writer.commit()
        except BaseException:
            writer.abort()
            raise
        written.append(os.path.relpath(path, settings.home))
    return written


def _rewrite(
    settings: Settings, key: AtRest | None, plan: Plan, lookup: PlainLookup, index: LakeIndex, report: ErasureReport
) -> set[str]:
    """Pass 2: every lake file of the plan without its erased and moved records, every quarantine
    file without the customers' records. Returns the event ids erased."""
    erased_events: set[str] = set()
    for rel, area, source in plan.files:
        path = settings.home / rel
        if rel in plan.moved_batches or not path.exists():
            continue  # a batch of moved records, or a file an earlier attempt emptied
        data = DataFile(path, area, source)
        if area == "quarantine":
            _rewrite_quarantine(data, key, lookup, report)
        else:
            erased_events |= _rewrite_lake(data, key, plan, lookup, report)
        index.index_file(data, key)
    return erased_events


def _rewrite_lake(
    data: DataFile, key: AtRest | None, plan: Plan, lookup: PlainLookup, report: ErasureReport
) -> set[str]:
    changed = False
    for batch in iter_parquet(data.path, key, list(IDENTIFIERS[data.source])):
        table = pa.Table.from_batches([batch])
        if pc.any(_mentions(data.source, table, plan)).as_py():
            changed = True
            break
    if not changed:
        return set()
    erased_events: set[str] = set()
    counts = {"erased": 0}

    def kept() -> Iterator[pa.Table]:
        for batch in iter_parquet(data.path, key):
            table = pa.Table.from_batches([batch])
            gone = erasable(data.source, table, lookup)
            drop = pc.or_(gone, _mentions(data.source, table, plan))
            counts["erased"] += pc.sum(pc.cast(gone, pa.int64())).as_py() or 0
            if data.source == "events" and pc.any(gone).as_py():
                erased_events.update(v for v in table.filter(gone).column("event_id").to_pylist() if v)
            yield table.filter(pc.invert(drop))

    schema = lake_schema(data.source)
    if key is None:  # a Kafka batch's offsets live in its footer metadata: kept (pipeline/kafka/offsets.py)
        kafka = {k: v for k, v in (pq.read_schema(data.path).metadata or {}).items() if k == b"sendtime.kafka"}
        if kafka:
            schema = schema.with_metadata(kafka)
    written = write_parquet_file(data.path, kept(), schema, key)
    report.records_erased += counts["erased"]
    if written is None:
        report.files_removed += 1
    else:
        report.files_rewritten += 1
    return erased_events


def _rewrite_quarantine(data: DataFile, key: AtRest | None, lookup: PlainLookup, report: ErasureReport) -> None:
    rows = read_quarantine(data.path, key)
    kept = [r for r in rows if not raw_erasable(r.get("raw"), lookup)]
    if len(kept) == len(rows):
        return
    report.records_erased += len(rows) - len(kept)
    if data.path.suffix == ".parquet":
        table = pa.Table.from_pylist(
            [{n: r.get(n) for n in QUARANTINE_SCHEMA.names} for r in kept], schema=QUARANTINE_SCHEMA
        )
        written = write_parquet_file(data.path, iter([table]), QUARANTINE_SCHEMA, key)
    else:
        written = write_jsonl_file(data.path, kept)
    if written is None:
        report.files_removed += 1
    else:
        report.files_rewritten += 1


def _erase_store(engine: Any, customer_ids: list[str], event_ids: list[str]) -> tuple[int, int]:
    """Profiles, recommendations and the collector's idempotency records, in one transaction. On
    SQLite the freed bytes are zeroed (secure_delete) and the WAL is checkpointed and truncated, so
    the files keep no copy of the deleted rows."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        profiles = store.delete_profiles(conn, customer_ids)
        collector = 0
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            collector += (
                conn.execute(
                    store.collector_event_ids.delete().where(store.collector_event_ids.c.event_id.in_(chunk))
                ).rowcount
                or 0
            )
    if sqlite:
        with engine.connect() as conn:
            try:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception:  # noqa: BLE001 - a busy reader: a later checkpoint overwrites the pages
                log.warning("the online store's WAL could not be truncated now")
    return profiles, collector


def _apply(
    settings: Settings, engine: Any, index: LakeIndex, register: Register, plan: Plan, report: ErasureReport
) -> None:
    key = at_rest(settings)
    lookup = PlainLookup(plan.erase)
    scan = _scan(settings, key, plan, lookup, report)
    if not plan.moved_batches:
        # CRM deletes stay in force for deleted customers whose later records stay
        snapshot = register.snapshot()
        plan.tombstones = {
            cid: snapshot.crm_deletes[h]
            for cid, h in plan.owners["customer_id"].items()
            if cid in scan.kept_customers and h in snapshot.crm_deletes
        }
        # the moved records are durable before any file loses them: a crash in between leaves
        # duplicates, which deduplication ignores, never a lost record
        plan.moved_batches = write_moved(settings, key, scan.moved, plan.tombstones) or ["-"]
        _write_side(settings, INFLIGHT, asdict(plan))
    report.records_moved = sum(t.num_rows for parts in scan.moved.values() for t in parts)
    report.tombstones = len(plan.tombstones)
    _test_hook("erase_rewrite")
    erased_events = _rewrite(settings, key, plan, lookup, index, report) | scan.erased_events
    erasure = WarehouseErasure(
        customer_ids=frozenset(plan.customer_ids),
        anonymous_ids=frozenset(plan.move_anonymous_ids),
        order_ids=frozenset(plan.move_order_ids),
        event_ids=frozenset(erased_events | scan.moved_events),
        emails=frozenset(plan.erase.get("email", {})),
        email_hashes=frozenset(h for h in (store.email_hash(e) for e in plan.erase.get("email", {})) if h),
    )
    if erasure.customer_ids or erasure.anonymous_ids or erasure.order_ids:
        report.warehouse_rows = sum(warehouse_for(settings).erase(erasure).values())
    profiles, collector = _erase_store(engine, sorted(plan.customer_ids), sorted(erased_events))
    report.profiles_deleted += profiles
    report.collector_ids_deleted += collector


def _test_hook(point: str) -> None:
    """As pipeline/cycle.py's test hooks (docs/pipeline.md): never set in production."""
    folder = os.environ.get("SENDTIME_TEST_HOOKS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / point).write_text(str(os.getpid()))
        if os.environ.get("SENDTIME_TEST_PAUSE_AT") == point:
            time.sleep(float(os.environ.get("SENDTIME_TEST_PAUSE_SECONDS", "3600")))


def run_pending(settings: Settings, engine: Any, cycle_id: str) -> ErasureReport:
    """The cycle's erasure phase: before dbt, under the cycle lock."""
    started = time.perf_counter()
    report = ErasureReport()
    register = register_for(settings)
    snapshot = register.snapshot()
    lookup = None if snapshot.empty else HashLookup(snapshot, register.hasher)
    key = at_rest(settings)
    with LakeIndex(settings, register.hasher) as index:
        caught = index.catch_up(snapshot, lookup)
        report.indexed_files = caught.indexed
        report.quarantine_files_expired = retention.expire_quarantine(settings, index)
        if caught.tombstones:
            # later records of a customer deleted in the CRM arrived: the delete stays in force
            write_moved(settings, key, {}, caught.tombstones)
            register.append(
                {"op": "tombstone", "h": register.hasher.hex("customer_id", cid), "at": at}
                for cid, at in sorted(caught.tombstones.items())
            )
            report.tombstones += len(caught.tombstones)
        inflight = _read_side(settings, INFLIGHT)
        requests = {r.h: r.at for r in snapshot.pending()}
        for h in caught.reappeared:  # records that came back: erased again, up to the same time
            requests[h] = max(r.at for r in snapshot.requests[h])
        if inflight is None and not requests:
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        if inflight is not None:  # an erasure a killed cycle left unfinished
            plan = Plan(**inflight)
        else:
            plan = make_plan(settings, index, register, snapshot, requests, _read_side(settings, PENDING) or {})
            # the linked devices, orders and emails join the register before anything changes, so
            # ingest erases them too from now on
            register.append(
                {
                    "op": "scope",
                    "of": plan.owners[kind][value],
                    "kind": kind,
                    "h": register.hasher.hex(kind, value),
                    "at": until,
                }
                for kind in ("anonymous_id", "order_id", "email")
                for value, until in sorted(plan.erase[kind].items())
            )
            _write_side(settings, INFLIGHT, asdict(plan))
        report.requests = len(plan.requests)
        _apply(settings, engine, index, register, plan, report)
        # done: the register keeps hashes and times; the plaintext of the requests and the plan goes
        now = iso_z(utcnow())
        entries = [
            {"op": "done", "h": h, "at": at, "completed_at": now, "cycle_id": cycle_id}
            for h, at in sorted(plan.requests.items())
        ]
        entries += [
            {"op": "tombstone", "h": plan.owners["customer_id"][cid], "at": at}
            for cid, at in sorted(plan.tombstones.items())
        ]
        register.append(entries)
        with _locked(settings):
            pending = _read_side(settings, PENDING) or {}
            remaining = {h: cid for h, cid in pending.items() if h not in plan.requests}
            _write_side(settings, PENDING, remaining or None)
        _write_side(settings, INFLIGHT, None)
    report.seconds = round(time.perf_counter() - started, 3)
    log.info("erasure", extra={"cycle_id": cycle_id, **report.to_dict()})
    return report


# --------------------------------------------------------------------------- after a restore


def after_restore(settings: Settings, manifest: dict[str, Any]) -> None:
    """`sendtime restore`'s step (pipeline/backup.py AFTER_RESTORE): the erasure requests made after
    the backup (its `erasure-after-backup.jsonl`, and the mirror when set) join the restored
    register, and the erasure runs now, before anything serves the restored data: their profiles
    answer 404 at once and the next cycles never read their records again."""
    register = register_for(settings)
    key = settings.erasure_dir / KEY
    mirrored = erasure_copies.mirror_key(settings)
    if not key.exists() and mirrored is not None and mirrored.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(mirrored.read_bytes())
        os.chmod(key, 0o600)
    restored = register.path.read_bytes() if register.path.exists() else b""
    missing = erasure_copies.lines_to_merge(settings, Path(manifest["directory"]), restored)
    if not missing:
        return
    register.append(missing)
    engine = store.engine_for(settings)
    try:
        report = run_pending(settings, engine, f"restore-{new_batch_id()}")
    finally:
        engine.dispose()
    log.info(
        "erasures made after the backup applied again",
        extra={"lines": len(missing), "requests": report.requests, "profiles_deleted": report.profiles_deleted},
    )
