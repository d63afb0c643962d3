"""The generator: deterministic, messy like real data, with preferences that recommendations can find."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.generate import COMPLEMENT_OF, CSV_COLUMNS, LEGACY_ALIASES, generate
from pipeline.ingest import ingest_files
from pipeline.timestamps import parse_timestamp

SIZE = {"customers": 300, "events": 30_000, "products": 150}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    out = tmp_path_factory.mktemp("gen") / "data"
    return out, generate(out, seed=11, **SIZE)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _canonical(product_id: str) -> str:
    pid = product_id.strip().upper()
    return LEGACY_ALIASES.get(pid, pid)


def test_same_seed_gives_byte_identical_files(generated, tmp_path: Path) -> None:
    out, _ = generated
    again = generate(tmp_path / "again", seed=11, **SIZE)
    assert _digest(tmp_path / "again") == _digest(out)
    other = generate(tmp_path / "other", seed=12, **SIZE)
    assert other["events"][0].read_bytes() != (out / other["events"][0].name).read_bytes()
    assert set(again) == {"events", "customers", "orders", "order_items", "products"}


def test_legacy_alias_rule_and_mapping_file(generated) -> None:
    out, _ = generated
    assert all(
        re.fullmatch(r"SKU-\d+", a) and p == f"P{int(a[4:]):05d}" and int(a[4:]) % 5 == 0 and int(a[4:]) <= 1000
        for a, p in LEGACY_ALIASES.items()
    )
    with open(out / "product_id_aliases.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["alias"]: r["product_id"] for r in rows} == LEGACY_ALIASES


def test_events_carry_the_mess(generated) -> None:
    _, files = generated
    per_file = [_records(p) for p in files["events"]]
    events = [e for f in per_file for e in f]
    assert len(files["events"]) >= 3

    counts = Counter(e["event_id"] for e in events if isinstance(e.get("event_id"), str))
    assert sum(1 for c in counts.values() if c > 1) > 0.005 * len(counts)  # re-sent events
    ids_by_file = [{e.get("event_id") for e in f} for f in per_file]
    assert ids_by_file[0] & ids_by_file[1]  # re-sent in a later file

    forms = Counter()
    for e in events:
        ts = e.get("occurred_at")
        if isinstance(ts, int):
            forms["epoch_ms"] += 1
        elif isinstance(ts, str) and ts.endswith("Z"):
            forms["z"] += 1
        elif isinstance(ts, str) and re.search(r"[+-]\d\d:\d\d$", ts):
            forms["offset"] += 1
        elif isinstance(ts, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ts):
            forms["naive"] += 1
    assert all(forms[k] > 0.04 * len(events) for k in ("epoch_ms", "z", "offset", "naive")), forms

    # late events: a later file holds events older than most of the previous file
    def times(records):
        return sorted(t for t in (parse_timestamp(r.get("occurred_at")) for r in records) if t)

    first, second = times(per_file[0]), times(per_file[1])
    late = sum(1 for t in second if t < first[len(first) // 2])
    assert late > 0.003 * len(second)

    product_ids = [e["product_id"] for e in events if isinstance(e.get("product_id"), str)]
    assert any(p.startswith("SKU-") for p in product_ids) and any(p.startswith("sku-") for p in product_ids)
    assert any(re.fullmatch(r"p\d{5}", p) for p in product_ids)
    assert any(
        e.get("event_type") not in (None,) and e["event_type"] != e["event_type"].strip().lower() for e in events
    )


def test_anonymous_browsing_is_linked_by_a_login(generated) -> None:
    _, files = generated
    events = [e for p in files["events"] for e in _records(p)]
    logins = {}
    for e in events:
        if e.get("event_type") == "login" and e.get("customer_id") and e.get("anonymous_id"):
            logins.setdefault(e["anonymous_id"], parse_timestamp(e["occurred_at"]))
    assert len(logins) > 0.1 * SIZE["customers"]
    before_login = sum(
        1
        for e in events
        if not e.get("customer_id")
        and e.get("anonymous_id") in logins
        and parse_timestamp(e.get("occurred_at"))
        and parse_timestamp(e["occurred_at"]) < logins[e["anonymous_id"]]
    )
    assert before_login > 50
    visitors = {e["anonymous_id"] for e in events if e.get("anonymous_id") and not e.get("customer_id")} - set(logins)
    assert visitors  # never-linked anonymous visitors too


def test_cdc_files_have_every_op_out_of_order_changes_lsn_ties_and_deletes(generated) -> None:
    _, files = generated
    first, second = (_records(p) for p in files["customers"])
    assert {c["op"] for c in first + second if isinstance(c.get("op"), str)} >= {"c", "u", "d", "r"}
    by_key: dict[str, list[dict]] = defaultdict(list)
    for change in second:
        row = change.get("after") or change.get("before") or {}
        if "customer_id" in row and isinstance(change.get("ts_ms"), int):
            by_key[row["customer_id"]].append(change)
    reversed_order = [k for k, cs in by_key.items() if any(a["ts_ms"] > b["ts_ms"] for a, b in zip(cs, cs[1:]))]
    ties = [
        k
        for k, cs in by_key.items()
        if any(
            a["ts_ms"] == b["ts_ms"] and a.get("source", {}).get("lsn", 0) > b.get("source", {}).get("lsn", 0)
            for a, b in zip(cs, cs[1:])
        )
    ]
    assert reversed_order and ties
    deletes = [c for c in second if c.get("op") == "d" and c.get("before")]
    assert deletes and all(c["after"] is None and c["before"]["customer_id"] for c in deletes)
    orders = [c for p in files["orders"] for c in _records(p)]
    assert {o["after"].get("status") for o in orders if o.get("op") == "u" and isinstance(o.get("after"), dict)} >= {
        "paid",
        "shipped",
        "delivered",
        "cancelled",
    }


def test_preferences_and_complements_are_planted(generated) -> None:
    out, files = generated
    with open(out / "products.csv") as fh:
        category = {r["product_id"].strip().upper(): r["category"] for r in csv.DictReader(fh) if r["product_id"]}
    views: dict[str, Counter] = defaultdict(Counter)
    for path in files["events"]:
        for e in _records(path):
            if e.get("event_type") == "product_view" and e.get("customer_id") and isinstance(e.get("product_id"), str):
                views[e["customer_id"]][category.get(_canonical(e["product_id"]), "?")] += 1
    shares = [sum(c for _, c in v.most_common(2)) / sum(v.values()) for v in views.values() if sum(v.values()) >= 15]
    assert len(shares) > 30
    # 12 categories: by chance the top two would hold ~1/4 of the views
    assert sum(shares) / len(shares) > 0.6

    items: dict[str, list[str]] = defaultdict(list)
    for c in _records(files["order_items"][0]):
        if isinstance(c.get("after"), dict) and c["after"].get("product_id"):
            items[c["after"]["order_id"]].append(category[_canonical(c["after"]["product_id"])])
    pairs = [(cats[0], cats[1]) for cats in items.values() if len(cats) >= 2]
    assert len(pairs) > 20
    complementary = sum(1 for a, b in pairs if b in (COMPLEMENT_OF[a], a))
    assert complementary / len(pairs) > 0.9


def test_purchases_are_orders(generated) -> None:
    _, files = generated
    purchase_orders = {
        e["properties"]["order_id"]
        for p in files["events"]
        for e in _records(p)
        if str(e.get("event_type")).strip().lower() == "purchase" and isinstance(e.get("properties"), dict)
    }
    created = {c["after"]["order_id"] for c in _records(files["orders"][0]) if c.get("op") == "c"}
    assert purchase_orders and purchase_orders == created


def test_everything_ingests_with_a_small_share_of_invalid_records(generated, tmp_path: Path) -> None:
    _, files = generated
    settings = load_settings(tmp_path / "home", environ={})
    for source, paths in files.items():
        report = ingest_files(settings, source, paths)
        assert report.received == report.accepted + report.rejected
        assert 0 < report.rejected <= 0.02 * report.received or (source == "order_items" and report.rejected >= 1), (
            source
        )
        if source == "events":
            assert 0.002 < report.rejected / report.received < 0.015


def test_csv_events_format(tmp_path: Path) -> None:
    files = generate(tmp_path / "csv", seed=5, customers=100, events=6000, products=60, events_format="csv")
    assert all(p.suffix == ".csv" for p in files["events"])
    with open(files["events"][0]) as fh:
        assert tuple(next(csv.reader(fh))) == CSV_COLUMNS
    report = ingest_files(load_settings(tmp_path / "home", environ={}), "events", files["events"])
    assert report.accepted > 0.97 * report.received and report.rejected > 0


def test_dbt_seed_holds_the_generator_aliases() -> None:
    """seeds/product_id_aliases.csv (the dbt project's) must map every legacy id the generator writes."""
    seed = Path(__file__).resolve().parents[1] / "seeds" / "product_id_aliases.csv"
    with open(seed) as fh:
        rows = {r["alias"].strip().upper(): r["product_id"] for r in csv.DictReader(fh)}
    assert {a: p for a, p in rows.items() if a in LEGACY_ALIASES} == LEGACY_ALIASES
