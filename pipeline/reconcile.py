"""`sendtime reconcile [--repair] [--json]`: the lake, the warehouse and the online store, compared.

Three comparisons, each reported as drift rows per check (docs/recovery.md, "Reconcile"):

* lake -> warehouse (`lake.<source>.*`): the accepted records of the lake batches that committed
  cycles read, against the warehouse's deduplicated records and current CDC state. Events: every
  distinct event_id of the lake is in `int_events_deduplicated` exactly once (`missing`, `extra`,
  `doubled`); CDC sources: every key's state is its newest change (`missing`, `extra`, `stale`);
  products: every canonical product id (`missing`, `extra`).
* inside the warehouse (`warehouse.profiles.*`): every live CRM customer has a profile, no deleted
  one has.
* warehouse -> store (`store.*`): every published row equal, field for field, to its mart row
  serialized as a publish would (pipeline/changes.py's JSON, in the marts' contract): a checksum
  (md5) per row of the mart's fresh body against the stored body and its etag, and the lookup hash
  of the email; rows the store lacks (`missing`), rows it should not have (`extra`: an erasure
  left behind), rows that differ (`changed`, with the differing fields counted by name); the
  stored contract (`store.contract.changed`). Rows written by a cycle that has not published yet
  (validation failed, killed) are `pending`, not drift.

`--repair` republishes what drifted in the store in ONE publish transaction (pipeline/publish.py,
a new version with the current cycle id, as_of and freshness), and when the warehouse drifted from
the lake it rebuilds the warehouse from the lake first (a `--full-refresh` cycle). The whole run
holds the home's cycle lock, so it sees one published state and one warehouse between cycles.
Drift is reported as counts and ids (customer and product ids, as in API URLs), never values.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from pipeline import store
from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.errors import SendtimeError
from pipeline.logs import get_logger
from pipeline.mart_contract import ERASURES, PRODUCTS, PROFILES, RECOMMENDATIONS, Contracts, checksum
from pipeline.reconcile_log import CHECKS, LAKE_SOURCES
from pipeline.warehouse import Warehouse, warehouse_for

log = get_logger("sendtime.reconcile")

SAMPLE = 10  # ids listed per drifted check
LOCK_WAIT_SECONDS = 600.0  # a cycle running when reconcile starts finishes first
EMPTY_LIST_DIGEST = hashlib.md5(b"[]").hexdigest()  # the body of an empty list; a checksum, not security


class ReconcileBusy(SendtimeError):
    """The home's cycle lock stayed taken (a long cycle, a backup)."""


@dataclass
class Drift:
    check: str
    rows: int
    ids: list[str] = field(default_factory=list)  # up to SAMPLE of them
    fields: dict[str, int] = field(default_factory=dict)  # changed rows: field -> rows differing


@dataclass
class ReconcileReport:
    started_at: datetime
    ended_at: datetime | None = None
    version: int | None = None  # the published version compared
    checked: dict[str, int] = field(default_factory=dict)  # rows compared per area
    timings: dict[str, float] = field(default_factory=dict)  # seconds per comparison (lake, warehouse, store)
    pending: dict[str, int] = field(default_factory=dict)  # rows written by cycles not published yet
    drift: list[Drift] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repaired: dict[str, int] | None = None
    remaining: list[Drift] | None = None  # after --repair: what a second pass still found

    @property
    def clean(self) -> bool:
        return not self.drift

    @property
    def ok(self) -> bool:
        """No drift, or all of it repaired."""
        return self.clean or (self.remaining is not None and not self.remaining)

    @property
    def status(self) -> str:
        return "clean" if self.clean else ("repaired" if self.ok else "drift")

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else 0.0

    def counts(self) -> dict[str, int]:
        found = {d.check: d.rows for d in self.drift}
        return {check: found.get(check, 0) for check in (*CHECKS, *found)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ok": self.ok,
            "started_at": iso_z(self.started_at),
            "ended_at": iso_z(self.ended_at),
            "seconds": round(self.seconds, 3),
            "version": self.version,
            "checked": self.checked,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "pending": self.pending,
            "skipped": self.skipped,
            "drift": [asdict(d) for d in self.drift],
            "repaired": self.repaired,
            "remaining": None if self.remaining is None else [asdict(d) for d in self.remaining],
        }

    def summary(self) -> str:
        checked = ", ".join(f"{k} {v}" for k, v in self.checked.items())
        lines = [
            (
                f"reconcile: {self.status} in {self.seconds:.2f}s (published version {self.version}; "
                f"compared {checked or 'nothing'})"
            )
        ]
        if any(self.pending.values()):
            lines.append(
                "  pending (written by a cycle, not published yet): "
                + ", ".join(f"{k} {v}" for k, v in self.pending.items() if v)
            )
        for note in self.skipped:
            lines.append(f"  skipped: {note}")
        for d in self.drift:
            detail = f" fields {', '.join(f'{k} {v}' for k, v in sorted(d.fields.items()))};" if d.fields else ""
            lines.append(f"  DRIFT {d.check}: {d.rows} rows;{detail} e.g. {', '.join(d.ids)}")
        if self.repaired is not None:
            lines.append("  repaired: " + (", ".join(f"{k} {v}" for k, v in self.repaired.items()) or "nothing"))
            if self.remaining:
                lines.append("  still drifting: " + ", ".join(f"{d.check} {d.rows}" for d in self.remaining))
        return "\n".join(lines)


# ------------------------------------------------------------------------------ the warehouse side


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _fetch(con: Any, sql: str, **params: Any) -> pd.DataFrame:
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).df()


def _rows(con: Any, sql: str, **params: Any) -> list[tuple]:
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()


def _digests(con: Any, contracts: Contracts, since: str) -> dict[str, list[tuple]]:
    """Per served mart: (key, [email,] md5 of the body a publish would write, pending: written after
    `since`); erasures: (key,) of the customers deleted by a cycle not published yet."""
    from pipeline.changes import LIST_KEY, LIST_ORDER, LOOKUP_COLUMN, json_object_sql

    profiles, recs, products = contracts[PROFILES], contracts[RECOMMENDATIONS], contracts[PRODUCTS]
    email = f"p.{LOOKUP_COLUMN}" if LOOKUP_COLUMN in profiles.names else "null"
    listed = [c for c in recs.served if c.name not in (LIST_KEY, LIST_ORDER)]
    return {
        PROFILES: _rows(
            con,
            f"""
            select p.customer_id as key, {email} as email, md5({json_object_sql(profiles.served, 'p')}) as digest,
                p._cycle_id > $since as pending
            from {PROFILES} as p""",
            since=since,
        ),
        RECOMMENDATIONS: _rows(
            con,
            f"""
            select r.{LIST_KEY} as key,
                md5('[' || string_agg({json_object_sql(listed, 'r')}, ',' order by r.{LIST_ORDER}) || ']') as digest,
                max(r._cycle_id) > $since as pending
            from {RECOMMENDATIONS} as r group by r.{LIST_KEY}""",
            since=since,
        ),
        PRODUCTS: _rows(
            con,
            f"""
            select p.product_id as key, md5({json_object_sql(products.served, 'p')}) as digest,
                p._cycle_id > $since as pending
            from {PRODUCTS} as p""",
            since=since,
        ),
        ERASURES: _rows(con, f"select customer_id as key from {ERASURES} where _cycle_id > $since", since=since),
    }


def _bodies(con: Any, contracts: Contracts, mart: str, keys: list[str]) -> dict[str, tuple]:
    """The fresh rows of `keys` in `mart`, as publish writes them: profiles (email, body, etag),
    recommendation lists (body,), products (body,)."""
    from pipeline.changes import LIST_KEY, LIST_ORDER, LOOKUP_COLUMN, json_object_sql

    if not keys:
        return {}
    wanted = _sql_list(keys)
    if mart == PROFILES:
        profiles = contracts[PROFILES]
        email = LOOKUP_COLUMN if LOOKUP_COLUMN in profiles.names else "null"
        rows = con.execute(f"""
            select customer_id, {email}, body, md5(body) from (
                select p.*, {json_object_sql(profiles.served, 'p')} as body from {PROFILES} as p
                where list_contains({wanted}, p.customer_id))""").fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}
    if mart == RECOMMENDATIONS:
        listed = [c for c in contracts[RECOMMENDATIONS].served if c.name not in (LIST_KEY, LIST_ORDER)]
        rows = con.execute(f"""
            select r.{LIST_KEY}, '[' || string_agg({json_object_sql(listed, 'r')}, ',' order by r.{LIST_ORDER}) || ']'
            from {RECOMMENDATIONS} as r where list_contains({wanted}, r.{LIST_KEY}) group by r.{LIST_KEY}""").fetchall()
        return {r[0]: (r[1],) for r in rows}
    rows = con.execute(f"""
        select p.product_id, {json_object_sql(contracts[PRODUCTS].served, 'p')} from {PRODUCTS} as p
        where list_contains({wanted}, p.product_id)""").fetchall()
    return {r[0]: (r[1],) for r in rows}


def _committed_batches(con: Any) -> pd.DataFrame:
    return _fetch(
        con,
        """
        select b.lake_table, b._batch_id from int_lake_batches_registered as b
        inner join int_cycles_registered as c on b._cycle_id = c.cycle_id where c.is_committed""",
    )


# what the lake and warehouse checks read besides the served marts (an engine that copies them into
# the reader's DuckDB copies these columns)
_WAREHOUSE_TABLES: dict[str, tuple[str, ...]] = {
    "int_lake_batches_registered": ("lake_table", "_batch_id", "_cycle_id"),
    "int_cycles_registered": ("cycle_id", "is_committed"),
    "product_id_aliases": ("alias", "product_id"),
    "int_customers_cdc_applied": ("customer_id", "is_deleted"),
}
for _key, _model, _version in LAKE_SOURCES.values():
    _WAREHOUSE_TABLES[_model] = tuple(
        dict.fromkeys((*_WAREHOUSE_TABLES.get(_model, ()), _key, *((_version,) if _version else ())))
    )


def _lake_checks(con: Any, settings: Settings, report: ReconcileReport) -> None:
    """Every lake source: the lake's records of committed batches against the warehouse's."""
    batches = _committed_batches(con)
    con.register("reconcile_committed", batches)
    try:
        for source, (key, model, version) in LAKE_SOURCES.items():
            files = sorted((settings.lake_dir / source).glob("ingest_date=*/*.parquet"))
            committed = set(batches.loc[batches["lake_table"] == source, "_batch_id"])
            lost = sorted(committed - {p.stem for p in files})
            if lost:
                report.drift.append(Drift(f"lake.{source}.lost_batches", len(lost), lost[:SAMPLE]))
            glob = str(settings.lake_dir / source / "*" / "*.parquet")
            if files:
                lake_key = f"coalesce(a.product_id, upper(l.{key}))" if source == "products" else f"l.{key}"
                alias = (
                    "left join product_id_aliases as a on upper(l.product_id) = a.alias" if source == "products" else ""
                )
                lake = f"""
                    select {lake_key} as key, {'max(l.ts_ms)' if version else 'null::bigint'} as version
                    from read_parquet('{glob}', union_by_name = true) as l {alias}
                    where l._batch_id in (select _batch_id from reconcile_committed where lake_table = '{source}')
                      and l.{key} is not null
                    group by 1"""
            else:
                lake = "select null::varchar as key, null::bigint as version where false"
            row = con.execute(f"""
                with lake as ({lake}),
                wh as (select {key} as key, {version or 'null::bigint'} as version from {model}),
                counted as (select key, count(*) as n, max(version) as version from wh group by key)
                select
                    (select count(*) from lake),
                    count(*) filter (where counted.key is null),
                    list(lake.key order by lake.key) filter (where counted.key is null)[1:{SAMPLE}],
                    count(*) filter (where lake.key is null),
                    list(counted.key order by counted.key) filter (where lake.key is null)[1:{SAMPLE}],
                    count(*) filter (where counted.n > 1),
                    list(counted.key order by counted.key) filter (where counted.n > 1)[1:{SAMPLE}],
                    count(*) filter (where lake.key is not null and counted.key is not null
                                     and lake.version is distinct from counted.version),
                    list(lake.key order by lake.key) filter (where lake.key is not null and counted.key is not null
                                     and lake.version is distinct from counted.version)[1:{SAMPLE}]
                from lake full join counted on lake.key = counted.key""").fetchall()[0]
            report.checked[f"lake.{source}"] = int(row[0])
            for kind, rows, ids in (
                ("missing", row[1], row[2]),
                ("extra", row[3], row[4]),
                ("doubled", row[5], row[6]),
                ("stale", row[7], row[8]),
            ):
                if rows:
                    report.drift.append(Drift(f"lake.{source}.{kind}", int(rows), [str(i) for i in ids or []]))
    finally:
        con.unregister("reconcile_committed")


def _warehouse_checks(con: Any, report: ReconcileReport) -> None:
    """Profiles against the current CRM state: a live customer has one, a deleted one has none."""
    for kind, sql in (
        (
            "missing",
            f"""select c.customer_id from int_customers_cdc_applied as c where not c.is_deleted
                        and not exists (select 1 from {PROFILES} as p where p.customer_id = c.customer_id)""",
        ),
        (
            "deleted",
            f"""select p.customer_id from {PROFILES} as p inner join int_customers_cdc_applied as c
                        on p.customer_id = c.customer_id where c.is_deleted""",
        ),
    ):
        ids = [r[0] for r in con.execute(f"select customer_id from ({sql}) order by 1").fetchall()]
        if ids:
            report.drift.append(Drift(f"warehouse.profiles.{kind}", len(ids), ids[:SAMPLE]))


# ------------------------------------------------------------------------------ the store side


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _stored(engine: Engine) -> dict[str, dict[str, tuple]]:
    """The store's served tables: key -> (md5 of the body, etag, email hash) / (md5 of the body,)."""
    out: dict[str, dict[str, tuple]] = {}
    with engine.connect() as conn:
        p = store.profiles
        out[PROFILES] = {
            k: (_md5(b), e, h)
            for k, h, b, e in conn.execute(select(p.c.customer_id, p.c.email_hash, p.c.body, p.c.etag))
        }
        r = store.recommendations
        out[RECOMMENDATIONS] = {k: (_md5(b),) for k, b in conn.execute(select(r.c.customer_id, r.c.body))}
        q = store.products
        out[PRODUCTS] = {k: (_md5(b),) for k, b in conn.execute(select(q.c.product_id, q.c.body))}
    return out


def _field_diff(fresh: str | None, stored: str | None) -> list[str]:
    """The names of the fields whose values differ (never the values)."""
    try:
        a, b = json.loads(fresh or "null"), json.loads(stored or "null")
    except ValueError:
        return ["(unreadable body)"]
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ["(whole body)"] if a != b else []
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class _StoreDrift:
    """The keys to republish per mart, and the customers to delete."""

    upsert: dict[str, list[str]] = field(default_factory=lambda: {PROFILES: [], RECOMMENDATIONS: [], PRODUCTS: []})
    delete: list[str] = field(default_factory=list)  # customers: profile and recommendations
    delete_products: list[str] = field(default_factory=list)
    contract: bool = False


def _store_checks(con: Any, engine: Engine, contracts: Contracts, since: str, report: ReconcileReport) -> _StoreDrift:
    marts = _digests(con, contracts, since)
    stored = _stored(engine)
    todo = _StoreDrift()
    found: dict[str, list[str]] = {}

    def add(check: str, key: str) -> None:
        found.setdefault(check, []).append(key)

    erasing = {r[0] for r in marts[ERASURES]}  # deleted by a cycle that has not published yet
    pending = {k for k, _, _, p in marts[PROFILES] if p}
    expected = {k: (d, store.email_hash(e)) for k, e, d, p in marts[PROFILES] if not p}
    report.checked["store.profiles"] = len(expected)
    have = stored[PROFILES]
    for key, (digest, email_hash) in expected.items():
        row = have.get(key)
        if row is None:
            add("store.profiles.missing", key)
        elif row[0] != digest or row[1] != digest or row[2] != email_hash:
            add("store.profiles.changed", key)
    for key in have.keys() - expected.keys() - pending - erasing:
        add("store.profiles.extra", key)

    rec_pending = pending | {k for k, _, p in marts[RECOMMENDATIONS] if p}
    rec_digest = {k: d for k, d, _ in marts[RECOMMENDATIONS]}
    have = stored[RECOMMENDATIONS]
    listed = [k for k in expected if k not in rec_pending]
    report.checked["store.recommendations"] = len(listed)
    for key in listed:
        want, row = rec_digest.get(key, EMPTY_LIST_DIGEST), have.get(key)
        if row is None and want != EMPTY_LIST_DIGEST:
            add("store.recommendations.missing", key)
        elif row is not None and row[0] != want:
            add("store.recommendations.changed", key)
    for key in have.keys() - expected.keys() - rec_pending - erasing:
        add("store.recommendations.extra", key)

    product_pending = {k for k, _, p in marts[PRODUCTS] if p}
    product_digest = {k: d for k, d, p in marts[PRODUCTS] if not p}
    report.checked["store.products"] = len(product_digest)
    have = stored[PRODUCTS]
    for key, digest in product_digest.items():
        row = have.get(key)
        if row is None:
            add("store.products.missing", key)
        elif row[0] != digest:
            add("store.products.changed", key)
    for key in have.keys() - product_digest.keys() - product_pending:
        add("store.products.extra", key)

    report.pending.update(
        {
            "profiles": len(pending),
            "recommendations": len(rec_pending - pending),
            "products": len(product_pending),
            "erasures": len(erasing),
        }
    )
    if store.contracts_checksum(engine) != checksum(contracts):
        todo.contract = True
        report.drift.append(Drift("store.contract.changed", 1, ["served_marts"]))

    for check, keys in sorted(found.items()):
        _, table, kind = check.split(".")
        mart = {"profiles": PROFILES, "recommendations": RECOMMENDATIONS, "products": PRODUCTS}[table]
        keys.sort()
        drift = Drift(check, len(keys), keys[:SAMPLE])
        if kind == "changed":
            drift.fields = _changed_fields(con, engine, contracts, mart, keys[:1000])
        report.drift.append(drift)
        if kind == "extra" and mart != PRODUCTS:
            todo.delete.extend(keys)
        elif kind == "extra":
            todo.delete_products.extend(keys)  # publish never deletes a product: only a hand can add one
        else:
            todo.upsert[mart].extend(keys)
    return todo


def _changed_fields(con: Any, engine: Engine, contracts: Contracts, mart: str, keys: list[str]) -> dict[str, int]:
    fresh = _bodies(con, contracts, mart, keys)
    table = {PROFILES: store.profiles, RECOMMENDATIONS: store.recommendations, PRODUCTS: store.products}[mart]
    key_column = table.c.product_id if mart == PRODUCTS else table.c.customer_id
    with engine.connect() as conn:
        stored = dict(conn.execute(select(key_column, table.c.body).where(key_column.in_(keys))).all())
    counts: dict[str, int] = {}
    for key in keys:
        row = fresh.get(key)
        body = None if row is None else (row[1] if mart == PROFILES else row[0])
        # the same body with another etag or email hash: those columns are what differs
        for name in _field_diff(body, stored.get(key)) or ["etag or email_hash"]:
            counts[name] = counts.get(name, 0) + 1
    return counts


# ------------------------------------------------------------------------------ repair


def _republish(con: Any, engine: Engine, contracts: Contracts, todo: _StoreDrift) -> dict[str, int]:
    """One publish of the drifted rows (pipeline/publish.py): a new version, same cycle, as_of and
    freshness as the current one."""
    from pipeline.changes import Changes
    from pipeline.publish import publish

    current = store.current_version(engine) or {}
    changes = Changes(since=current.get("cycle_id"), contracts=dict(contracts))
    profiles = _bodies(con, contracts, PROFILES, todo.upsert[PROFILES])
    changes.profile_bodies = [(k, email, body, tag) for k, (email, body, tag) in sorted(profiles.items())]
    lists = _bodies(con, contracts, RECOMMENDATIONS, todo.upsert[RECOMMENDATIONS])
    changes.recommendation_bodies = [(k, lists.get(k, ("[]",))[0]) for k in sorted(todo.upsert[RECOMMENDATIONS])]
    products = _bodies(con, contracts, PRODUCTS, todo.upsert[PRODUCTS])
    changes.product_bodies = [(k, body) for k, (body,) in sorted(products.items())]
    changes.frames[ERASURES] = pd.DataFrame({"customer_id": sorted(set(todo.delete))})
    as_of = current.get("as_of")
    newest = current.get("newest_ingested_at")
    published = publish(
        engine,
        changes,
        cycle_id=current.get("cycle_id") or "reconcile",
        as_of=datetime.fromisoformat(as_of.replace("Z", "")) if as_of else utcnow(),
        newest_ingested_at=datetime.fromisoformat(newest.replace("Z", "")) if newest else None,
        force_version=True,
    )
    removed = 0
    if todo.delete_products:
        with engine.begin() as conn:
            removed = (
                conn.execute(
                    store.products.delete().where(store.products.c.product_id.in_(todo.delete_products))
                ).rowcount
                or 0
            )
    log.info("reconcile republished", extra={"version": published.version, **published.to_dict()})
    return {
        "profiles": published.profiles_upserted,
        "recommendations": published.recommendations_upserted,
        "products": published.products_upserted,
        "deleted": published.profiles_deleted,
        "products_deleted": removed,
        "contract": int(todo.contract),
    }


# ------------------------------------------------------------------------------ entry points


def _contracts(settings: Settings) -> Contracts:
    """The served marts' contract the warehouse was built with: the last build's manifest.json
    under the home (cheap), else the project parsed (dbt, a few seconds)."""
    from pipeline.mart_contract import from_manifest

    manifest = settings.dbt_target_dir / "manifest.json"
    if manifest.is_file():
        try:
            return from_manifest(json.loads(manifest.read_text()))
        except (ValueError, KeyError):
            pass
    from pipeline.transform import served_contracts

    return served_contracts(settings)


def _pass(
    settings: Settings, engine: Engine, warehouse: Warehouse, contracts: Contracts, report: ReconcileReport
) -> _StoreDrift | None:
    """One comparison of everything; returns the store drift to repair (None: nothing published)."""
    version = store.current_version(engine)
    report.version = version["version"] if version else None
    if version is None:
        report.skipped.append("nothing published yet")
        return None
    if not warehouse.exists():
        report.drift.append(Drift("warehouse.missing", 1, [str(settings.warehouse_path.name)]))
        return None
    state = warehouse.cycle_state(settings.lake_overlap_seconds)
    with warehouse.marts(tables=_WAREHOUSE_TABLES) as con:
        clock = time.perf_counter()
        if state is not None and state.last_cycle_committed:
            _lake_checks(con, settings, report)
            report.timings["lake"] = time.perf_counter() - clock
            clock = time.perf_counter()
            _warehouse_checks(con, report)
            report.timings["warehouse"] = time.perf_counter() - clock
            clock = time.perf_counter()
        else:
            report.skipped.append(
                "lake and warehouse checks: the last cycle did not commit (the next good cycle catches up)"
            )
        todo = _store_checks(con, engine, contracts, version["cycle_id"], report)
        report.timings["store"] = time.perf_counter() - clock
        return todo


def _warehouse_drifted(drift: list[Drift]) -> bool:
    return any(d.check.startswith(("lake.", "warehouse.")) for d in drift)


def reconcile(settings: Settings, *, repair: bool = False, lock_wait: float = LOCK_WAIT_SECONDS) -> ReconcileReport:
    """Compare (and with `repair`, republish); holds the home's cycle lock throughout."""
    from pipeline.cycle import cycle_lock
    from pipeline.reconcile_log import ReconcileRecord, record

    report = ReconcileReport(started_at=utcnow())
    lock = cycle_lock(settings)
    if not lock.wait(lock_wait):
        raise ReconcileBusy(
            f"another cycle, reconcile or backup holds {lock.path} (pid {lock.holder_pid()}); retry later"
        )
    engine = store.engine_for(settings)
    error = None
    try:
        store.migrate(engine)
        contracts = _contracts(settings)
        warehouse = warehouse_for(settings)
        todo = _pass(settings, engine, warehouse, contracts, report)
        if repair and report.drift:
            report.repaired = {}
            if _warehouse_drifted(report.drift):
                lock.release()  # the full-refresh cycle takes the lock itself
                from pipeline.cycle import run_cycle

                rebuilt = run_cycle(settings, full_refresh=True)
                report.repaired["warehouse_rebuilt"] = int(rebuilt.ok)
                report.repaired["rebuild_rows_published"] = rebuilt.rows_published
                report.repaired["rebuild_rows_deleted"] = rebuilt.rows_deleted
                if not lock.wait(lock_wait):
                    raise ReconcileBusy("the cycle lock was taken after the rebuild; run reconcile again")
                contracts = _contracts(settings)
                again = ReconcileReport(started_at=report.started_at)
                todo = _pass(settings, engine, warehouse, contracts, again)
            if todo is not None and (any(todo.upsert.values()) or todo.delete or todo.delete_products or todo.contract):
                with warehouse.marts() as con:
                    report.repaired.update(_republish(con, engine, contracts, todo))
            check = ReconcileReport(started_at=report.started_at)
            _pass(settings, engine, warehouse, contracts, check)
            report.remaining = check.drift
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        lock.release()
        report.ended_at = utcnow()
        try:
            record(
                engine,
                ReconcileRecord(
                    started_at=iso_z(report.started_at),
                    ended_at=iso_z(report.ended_at),
                    status="failed" if error else report.status,
                    version=report.version,
                    seconds=report.seconds,
                    drift={d.check: d.rows for d in report.drift},
                    repaired=report.repaired,
                    error=error,
                ),
            )
        except Exception as exc:  # noqa: BLE001 - the report is printed anyway; the log is best effort
            log.warning("reconcile not recorded in the online store", extra={"error_type": type(exc).__name__})
        engine.dispose()
    level = log.info if report.clean else log.warning
    level(
        "reconcile finished",
        extra={
            "status": report.status,
            "seconds": round(report.seconds, 3),
            "drift": {d.check: d.rows for d in report.drift},
            "repaired": report.repaired,
        },
    )
    return report


@dataclass
class ReconcileRunner:
    """The scheduler's job (pipeline/scheduler.py): reconcile every `reconcile_every`, repairing when
    `reconcile_repair` is set; never raises into APScheduler (a failure is logged and recorded)."""

    settings: Settings

    def tick(self) -> None:
        try:
            reconcile(self.settings, repair=self.settings.reconcile_repair, lock_wait=60.0)
        except Exception as exc:  # noqa: BLE001 - logged; the next tick tries again
            log.warning("reconcile failed", extra={"error": f"{type(exc).__name__}: {exc}"[:500]})
