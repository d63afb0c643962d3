"""Helpers of the privacy tests: a customer to forget with a trace in every source, and a scan of a
home that reads every file with its own reader (Parquet, JSON, CSV, DuckDB, SQLite, text)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

FORGET = "cust-forget"
EMAIL = "zebulon.quixote@example.org"
FIRST, LAST = "Zebulon", "Quixotemark"
DEVICE = "anon-forget-device"
KEEP = "cust-keep"
NEEDLES = (FORGET, EMAIL, FIRST, LAST, DEVICE)
AS_OF = "2026-11-26T00:00:00Z"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _customer(cid: str, email: str, first: str, last: str, ts: str, op: str = "c") -> dict[str, Any]:
    row = {
        "customer_id": cid,
        "email": email,
        "first_name": first,
        "last_name": last,
        "country": "GB",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "marketing_consent": True,
        "created_at": ts,
        "updated_at": ts,
    }
    return {"op": op, "ts_ms": ms(ts), "before": row if op == "d" else None, "after": None if op == "d" else row}


def write_sources(folder: Path) -> dict[str, Path]:
    """One file per source: the customer to forget (CRM, an order with an item, events of their own
    and of their linked device, a quarantined CRM row and a quarantined event) and one to keep."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "products": [
            {
                "product_id": p,
                "name": f"Product {p}",
                "category": c,
                "price": "10.00",
                "currency": "USD",
                "url": f"https://shop.example/{p}",
                "image_url": f"https://shop.example/{p}.jpg",
                "in_stock": True,
            }
            for p, c in (("P1", "books"), ("P2", "garden"), ("P3", "garden"))
        ],
        "customers": [
            _customer(FORGET, EMAIL, FIRST, LAST, "2026-11-01T10:00:00Z"),
            _customer(FORGET, EMAIL, FIRST, LAST, "2026-11-02T10:00:00Z", op="u"),
            _customer(KEEP, "keep.me@example.org", "Keeper", "Staysalot", "2026-11-01T11:00:00Z"),
            # broken (unknown op): quarantined, and it carries their email and name
            {
                "op": "x",
                "ts_ms": ms("2026-11-03T10:00:00Z"),
                "after": {"customer_id": FORGET, "email": EMAIL, "first_name": FIRST},
            },
        ],
        "orders": [
            {
                "op": "c",
                "ts_ms": ms("2026-11-05T10:00:00Z"),
                "after": {
                    "order_id": "o-forget",
                    "customer_id": FORGET,
                    "status": "paid",
                    "currency": "USD",
                    "total_amount": 42.5,
                    "created_at": "2026-11-05T10:00:00Z",
                    "updated_at": "2026-11-05T10:00:00Z",
                },
            },
            {
                "op": "c",
                "ts_ms": ms("2026-11-05T11:00:00Z"),
                "after": {
                    "order_id": "o-keep",
                    "customer_id": KEEP,
                    "status": "paid",
                    "currency": "USD",
                    "total_amount": 10,
                    "created_at": "2026-11-05T11:00:00Z",
                    "updated_at": "2026-11-05T11:00:00Z",
                },
            },
        ],
        "order_items": [
            {
                "op": "c",
                "ts_ms": ms("2026-11-05T10:00:00Z"),
                "after": {
                    "order_item_id": "i-forget",
                    "order_id": "o-forget",
                    "product_id": "P1",
                    "quantity": 1,
                    "unit_price": 42.5,
                },
            },
            {
                "op": "c",
                "ts_ms": ms("2026-11-05T11:00:00Z"),
                "after": {
                    "order_item_id": "i-keep",
                    "order_id": "o-keep",
                    "product_id": "P2",
                    "quantity": 1,
                    "unit_price": 10,
                },
            },
        ],
        "events": [
            {
                "event_id": "e-device",
                "event_type": "page_view",
                "occurred_at": "2026-11-10T09:00:00Z",
                "anonymous_id": DEVICE,
                "properties": {"url": "https://shop.example/"},
            },
            {
                "event_id": "e-link",
                "event_type": "product_view",
                "occurred_at": "2026-11-10T09:05:00Z",
                "customer_id": FORGET,
                "anonymous_id": DEVICE,
                "product_id": "P1",
            },
            {
                "event_id": "e-own",
                "event_type": "add_to_cart",
                "occurred_at": "2026-11-11T09:00:00Z",
                "customer_id": FORGET,
                "product_id": "P3",
            },
            {
                "event_id": "e-keep",
                "event_type": "add_to_cart",
                "occurred_at": "2026-11-11T10:00:00Z",
                "customer_id": KEEP,
                "product_id": "P2",
            },
            # broken (unparseable time): quarantined
            {"event_id": "e-bad", "event_type": "page_view", "occurred_at": "yesterday", "customer_id": FORGET},
        ],
    }
    paths = {}
    for source, records in data.items():
        path = folder / f"{source}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[source] = path
    return paths


def later_signup(folder: Path) -> dict[str, Path]:
    """The same id signs up again after the erasure: records later than the request."""
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    stamp = later.isoformat().replace("+00:00", "Z")
    folder.mkdir(parents=True, exist_ok=True)
    customers = folder / "signup-customers.jsonl"
    customers.write_text(json.dumps(_customer(FORGET, "new.person@example.org", "Newt", "Person", stamp)) + "\n")
    events = folder / "signup-events.jsonl"
    events.write_text(
        json.dumps({"event_id": "e-signup", "event_type": "signup", "occurred_at": stamp, "customer_id": FORGET}) + "\n"
    )
    return {"customers": customers, "events": events}


# --------------------------------------------------------------------------- the scan


def _text_values(rows: list[tuple]) -> str:
    return "\n".join(" ".join("" if v is None else str(v) for v in row) for row in rows)


def read_file(path: Path) -> str:
    """A file's content as its own reader sees it, as text."""
    name = path.name
    if name.endswith(".parquet"):
        table = pq.read_table(path)
        return _text_values([tuple(r.values()) for r in table.to_pylist()])
    if name.endswith(".duckdb"):
        with duckdb.connect(str(path), read_only=True) as con:
            tables = [
                r[0]
                for r in con.execute(
                    "select table_name from information_schema.tables where table_schema = 'main'"
                    # views hold no rows: they read the lake, whose files are scanned one by one
                    " and table_type = 'BASE TABLE'"
                ).fetchall()
            ]
            return "\n".join(_text_values(con.execute(f'select * from "{t}"').fetchall()) for t in tables)
    if name.endswith(".sqlite"):
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'").fetchall()]
            return "\n".join(_text_values(con.execute(f'select * from "{t}"').fetchall()) for t in tables)
        finally:
            con.close()
    if name.endswith((".jsonl", ".json")):
        text = path.read_text(errors="replace")
        try:
            return json.dumps(json.loads(text)) if name.endswith(".json") else text
        except ValueError:
            return text
    return path.read_bytes().decode("utf-8", errors="replace")  # CSV, logs, SQL, anything else


def scan(home: Path, needles: tuple[str, ...] = NEEDLES) -> list[str]:
    """'file: needle' for every needle found in any file under the home, read with its reader; and
    for every file but a database, in its raw bytes too."""
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path.name.endswith((".duckdb.wal", ".sqlite-shm")) or path.suffix in (".lock", ".pid"):
            continue
        text = read_file(path).lower()
        raw = b"" if path.name.endswith((".duckdb", ".sqlite", ".sqlite-wal")) else path.read_bytes().lower()
        for needle in needles:
            if needle.lower() in text or needle.lower().encode() in raw:
                found.append(f"{path.relative_to(home)}: {needle}")
    return found
