"""The change reader: what a cycle changed in the served marts, read once for validation and publish.

Rows with `_cycle_id > <last published cycle>` are read (all rows when nothing was published
yet), so a cycle whose validation failed, or that was killed after dbt, is published by the next
good cycle (docs/architecture.md). Everything about the columns comes from the marts' contract
(pipeline/mart_contract.py): the JSON body of each served row, built once here with DuckDB SQL in
the contract's order, and the `check_*` columns that validation expects (list sizes, patterns of
list items, the contract's row checks).

The body is the API's response: timestamps ISO-8601 UTC with `Z` (fraction only when non-zero,
as `pipeline.clock.iso_z`), money as a JSON number with the column's decimals (`12.50`), lists as
`[]` when empty, doubles with 6 decimals, unknowns as null. DuckDB builds the JSON text, its md5
(the etag) and the check columns in one vectorized query per mart: at 100,000 profiles,
converting lists to Python objects alone cost more than the whole publish budget
(bench/publish.py; docs/pipeline.md). tests/test_publish.py checks every body against an
independent Python serializer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from pipeline.errors import StoreError
from pipeline.mart_contract import ERASURES, PRODUCTS, PROFILES, RECOMMENDATIONS, Column, Contracts, MartContract
from pipeline.warehouse import Warehouse

# the profile column whose hash is the key of `POST /customers/lookup`
LOOKUP_COLUMN = "email"
# the grouping key and order of a customer's recommendation list (its body holds the other columns)
LIST_KEY, LIST_ORDER = "customer_id", "rank"


# ------------------------------------------------------------------------------ SQL from the contract


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_value_sql(expr: str, column: Column) -> str:
    """A DuckDB expression: the JSON text of one value of `column`."""
    kind = column.kind
    if kind == "money":
        # DECIMAL(18, s) as text keeps every decimal: 12.50, 0.00
        return f"coalesce(cast(cast({expr} as decimal(18, {column.scale})) as varchar), 'null')"
    if kind == "timestamp":
        # iso_z: the fraction only when non-zero
        return (
            f"""coalesce('"' || replace(strftime({expr}, '%Y-%m-%dT%H:%M:%S.%fZ'), '.000000Z', 'Z') || '"', 'null')"""
        )
    if kind == "list":
        return f"coalesce(to_json({expr})::varchar, '[]')"
    if kind == "number":
        return f"coalesce(to_json(round({expr}, 6))::varchar, 'null')"
    return f"coalesce(to_json({expr})::varchar, 'null')"


def json_object_sql(columns: Iterable[Column], alias: str) -> str:
    """A DuckDB expression building the JSON object text of `columns`, in that order."""
    parts = [f"{_sql_string(json.dumps(c.name) + ':')} || {json_value_sql(f'{alias}.{c.name}', c)}" for c in columns]
    return "'{' || " + " || ',' || ".join(parts) + " || '}'"


def check_columns_sql(contract: MartContract) -> dict[str, str]:
    """check_* columns over a changed row of `contract`'s mart, as DuckDB expressions: what a
    Great Expectations expectation cannot say on its own (list contents, cross-field rules).
    `$as_of` is the cycle's as_of; `products` is the current catalog."""
    checks: dict[str, str] = {}
    for column in contract.served:
        if column.kind != "list":
            continue
        items = f"coalesce({column.name}, [])"
        if column.max_items is not None:
            checks[f"check_{column.name}_size"] = f"len({items})"
        if column.list_items_not_null:
            checks[f"check_{column.name}_items_not_null"] = (
                f"{column.name} is not null and list_count({items}) = len({items})"
            )
        if column.meta.get("distinct_items"):
            checks[f"check_{column.name}_distinct"] = f"len(list_distinct({items})) = len({items})"
        if column.meta.get("item_pattern"):
            pattern = _sql_string(column.meta["item_pattern"])
            checks[f"check_{column.name}_items_match"] = (
                f"len(list_filter({items}, lambda x: x is null or not regexp_full_match(x, {pattern}))) = 0"
            )
    for name, expr in contract.row_checks.items():
        checks[f"check_{name}"] = f"coalesce(({expr}), false)"
    return checks


def _select_checks(contract: MartContract) -> str:
    checks = check_columns_sql(contract)
    return "".join(f", {expr} as {name}" for name, expr in checks.items())


def etag(body: str) -> str:
    """md5 hex of the body's UTF-8 bytes: DuckDB's md5(body), the value stored with each profile."""
    return hashlib.md5(body.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ reading


@dataclass
class Changes:
    """What the cycle changed in the warehouse: frames for validation, bodies for publishing."""

    since: str | None
    contracts: Contracts
    # served scalar columns + check_* columns of the changed rows, per served mart
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    # (customer_id, email, body, etag) of the changed profiles
    profile_bodies: list[tuple] = field(default_factory=list)
    # (customer_id, body) of the customers whose profile or list changed; `[]` when none is left
    recommendation_bodies: list[tuple] = field(default_factory=list)
    product_bodies: list[tuple] = field(default_factory=list)
    # every profile key in the warehouse, read on a full refresh to drop what vanished
    all_profile_ids: set[str] | None = None

    def frame(self, mart: str) -> pd.DataFrame:
        return self.frames.get(mart, pd.DataFrame())

    @property
    def erasures(self) -> pd.DataFrame:
        return self.frame(ERASURES)

    @property
    def rows_read(self) -> int:
        return sum(len(frame) for frame in self.frames.values())

    @property
    def rows_changed(self) -> int:
        return (
            len(self.profile_bodies) + len(self.recommendation_bodies) + len(self.product_bodies) + len(self.erasures)
        )

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


def _require(con: Any, contract: MartContract) -> None:
    have = _columns(con, contract.name)
    if not have:
        raise StoreError(f"the warehouse has no mart {contract.name!r}: run a cycle (dbt build) first")
    missing = [n for n in contract.names if n not in have]
    if missing:
        raise StoreError(f"mart {contract.name} lacks the contract's columns {', '.join(missing)}")


def _values(column: pd.Series) -> list[Any]:
    # pandas 3 strings hold a missing value as NaN: hand Python None to the store
    return column.astype(object).where(column.notna(), None).tolist()


def _split(frame: pd.DataFrame, body_columns: list[str]) -> tuple[pd.DataFrame, list[tuple]]:
    bodies = list(zip(*(_values(frame[c]) for c in body_columns))) if len(frame) else []
    return frame.drop(columns=[c for c in ("body", "etag") if c in frame.columns]), bodies


def _run(con: Any, sql: str, **values: Any) -> Any:
    """Execute with the named parameters the statement uses (DuckDB refuses unused ones)."""
    return con.execute(sql, {k: v for k, v in values.items() if f"${k}" in sql})


def _scalars(contract: MartContract) -> str:
    return ", ".join(c.name for c in contract.served if c.kind != "list")


# customers whose profile or recommendations changed since $since and who still have a profile
_RELISTED = f"""
relisted as (
    select customer_id from (
        select customer_id from {RECOMMENDATIONS} where _cycle_id > $since
        union
        select customer_id from {PROFILES} where _cycle_id > $since
    ) as changed
    where exists (select 1 from {PROFILES} as p where p.customer_id = changed.customer_id)
)"""


def read_changes(
    warehouse: Warehouse, contracts: Contracts, since: str | None, as_of: datetime, *, all_keys: bool = False
) -> Changes:
    """The rows of the served marts written after cycle `since` (all rows when None), with their
    JSON bodies and the check columns validation needs (`as_of`: the cycle's reference time)."""
    profiles, recommendations = contracts[PROFILES], contracts[RECOMMENDATIONS]
    products, erasures = contracts[PRODUCTS], contracts[ERASURES]
    params = {"since": since or "", "as_of": as_of}
    changes = Changes(since=since, contracts=dict(contracts))
    # all rows on a full refresh (every profile key is read); else the rows written after `since`
    with warehouse.marts(None if all_keys else since) as con:
        for contract in (profiles, recommendations, products, erasures):
            _require(con, contract)

        frame = _run(
            con,
            f"""
            with changed as (select * from {PROFILES} where _cycle_id > $since),
            bodies as (select *, {json_object_sql(profiles.served, 'changed')} as body from changed)
            select {_scalars(profiles)}{_select_checks(profiles)}, body, md5(body) as etag
            from bodies order by customer_id
        """,
            **params,
        ).df()
        key_columns = ["customer_id", LOOKUP_COLUMN] if LOOKUP_COLUMN in profiles.names else ["customer_id"]
        changes.frames[PROFILES], bodies = _split(frame, [*key_columns, "body", "etag"])
        changes.profile_bodies = bodies if len(key_columns) == 2 else [(c, None, b, t) for c, b, t in bodies]

        listed = [c for c in recommendations.served if c.name not in (LIST_KEY, LIST_ORDER)]
        changes.frames[RECOMMENDATIONS] = _run(
            con,
            f"""
            with {_RELISTED}
            select {_scalars(recommendations)}{_select_checks(recommendations)}
            from (
                select r.* from {RECOMMENDATIONS} as r
                inner join relisted on r.customer_id = relisted.customer_id
            )
            order by customer_id, {LIST_ORDER}
        """,
            **params,
        ).df()
        changes.recommendation_bodies = _run(
            con,
            f"""
            with {_RELISTED}
            select relisted.customer_id,
                '[' || coalesce(string_agg({json_object_sql(listed, 'r')}, ',' order by r.{LIST_ORDER})
                    filter (where r.customer_id is not null), '') || ']'
            from relisted left join {RECOMMENDATIONS} as r on relisted.customer_id = r.customer_id
            group by relisted.customer_id order by relisted.customer_id
        """,
            **params,
        ).fetchall()

        frame = _run(
            con,
            f"""
            select {_scalars(products)}{_select_checks(products)},
                {json_object_sql(products.served, PRODUCTS)} as body
            from {PRODUCTS} where _cycle_id > $since order by product_id
        """,
            **params,
        ).df()
        changes.frames[PRODUCTS], changes.product_bodies = _split(frame, ["product_id", "body"])

        changes.frames[ERASURES] = _run(
            con,
            f"""
            select {_scalars(erasures)}{_select_checks(erasures)} from {ERASURES} as e
            where e._cycle_id > $since
              and not exists (select 1 from {PROFILES} as p where p.customer_id = e.customer_id)
            order by e.customer_id
        """,
            **params,
        ).df()
        if all_keys:
            changes.all_profile_ids = {r[0] for r in con.execute(f"select customer_id from {PROFILES}").fetchall()}
    return changes
