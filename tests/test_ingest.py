"""Ingest through the real CLI (a subprocess): each bad input of the issue, the lake's columns and
metadata, quarantine lines, and file-level errors that leave nothing behind."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contracts import CONTRACTS, METADATA_SCHEMA
from pipeline.ingest import ingest_files

GOOD = {"event_id": "e1", "event_type": "page_view", "occurred_at": "2026-11-28T10:00:00Z", "customer_id": "c1"}
EVENT_COLUMNS = [
    "event_id",
    "event_type",
    "occurred_at",
    "customer_id",
    "anonymous_id",
    "product_id",
    "properties",
    "email_hash",
]
METADATA = [name for name, _ in METADATA_SCHEMA]


def _event(**fields) -> str:
    record = {**GOOD, **fields}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _quarantine(report: dict) -> list[dict]:
    return [json.loads(line) for line in Path(report["quarantine_path"]).read_text().splitlines()]


def _state_files(home: Path) -> list[Path]:
    """Every file (hidden temporaries included) under the lake and the quarantine."""
    return sorted(p for root in ("lake", "quarantine") for p in (home / root).rglob("*") if p.is_file())


def _error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sendtime: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# --- one bad record among good ones: quarantined with its reason, neighbours accepted ----------

BAD_RECORDS = [
    ("malformed JSON line", '{"event_id": "e2", "event_type": "page_view", ', "malformed JSON: "),
    ("missing required field", _event(event_id=...), "missing required field: event_id"),
    ("missing required (blank)", _event(occurred_at="   "), "missing required field: occurred_at"),
    ("wrong type", _event(event_id=42), "event_id: expected string, got number"),
    ("wrong type object", _event(customer_id={"id": 1}), "customer_id: expected string, got object"),
    ("properties not an object", _event(properties="cheap"), "properties: expected object, got string"),
    ("unparseable timestamp", _event(occurred_at="2026-02-30T10:00:00Z"), "occurred_at: unparseable timestamp"),
    ("float timestamp", _event(occurred_at=1732780800000.5), "occurred_at: unparseable timestamp"),
    ("neither customer_id nor anonymous_id", _event(customer_id=None), "needs customer_id, anonymous_id or email_hash"),
    ("product_view without product_id", _event(event_type="product_view"), "product_view requires product_id"),
    (
        "add_to_cart blank product_id",
        _event(event_type="Add_To_Cart", product_id=" "),
        "add_to_cart requires product_id",
    ),
    ("not an object", "[1, 2, 3]", "not a JSON object"),
]


@pytest.mark.parametrize("label,line,reason", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_is_quarantined_and_neighbours_kept(
    settings, tmp_path: Path, label: str, line: str, reason: str
) -> None:
    # record validation, not CLI behaviour: in-process (the CLI path is covered by the mixed-file test)
    path = _write(tmp_path / "events.jsonl", [_event(event_id="a"), line, _event(event_id="b")])
    report = ingest_files(settings, "events", [path]).to_dict()
    assert (report["received"], report["accepted"], report["rejected"]) == (3, 2, 1)
    [entry] = _quarantine(report)
    assert entry["line"] == 2
    assert entry["raw"] == line
    assert entry["source_file"] == "events.jsonl"
    assert entry["reason"].startswith(reason), entry["reason"]
    lake = pq.read_table(report["lake_file"])
    assert lake.column("event_id").to_pylist() == ["a", "b"]
    assert lake.column("_source_line").to_pylist() == [1, 3]


def test_unknown_cdc_op_and_other_cdc_rules(cli, tmp_path: Path) -> None:
    lines = [
        '{"op": "c", "ts_ms": 1, "before": null, "after": {"customer_id": "c1", "email": "A@x.io"}}',
        '{"op": "x", "ts_ms": 2, "after": {"customer_id": "c1"}}',
        '{"op": "u", "ts_ms": "later", "after": {"customer_id": "c1"}}',
        '{"op": "u", "ts_ms": 3, "after": {"email": "b@x.io"}}',
        '{"op": "d", "ts_ms": 4, "before": null}',
        '{"op": "u", "ts_ms": 5, "after": {"customer_id": "c1", "marketing_consent": "maybe"}}',
        '{"op": "u", "ts_ms": 6, "after": {"customer_id": "c1", "created_at": "31/12/2025"}}',
        '{"op": "u", "ts_ms": 7, "after": {"customer_id": "c1", "country": "USA"}}',
    ]
    report = json.loads(cli("ingest", "customers", str(_write(tmp_path / "c.jsonl", lines)), "--json").stdout)
    reasons = {q["line"]: q["reason"] for q in _quarantine(report)}
    assert reasons == {
        2: "op: unknown CDC op 'x'",
        3: "ts_ms: expected integer, got 'later'",
        4: "missing required field: after.customer_id",
        5: "before: required object for op 'd'",
        6: "after.marketing_consent: expected boolean, got 'maybe'",
        7: "after.created_at: unparseable timestamp",
        8: "after.country: expected a 2-letter country code, got 'USA'",
    }
    assert (report["received"], report["accepted"], report["rejected"]) == (8, 1, 7)


def test_received_equals_accepted_plus_rejected_on_a_mixed_file(cli, tmp_path: Path) -> None:
    lines = [line for _, line, _ in BAD_RECORDS] + [_event(event_id=f"ok{i}") for i in range(20)] + ["", "   "]
    report = json.loads(cli("ingest", "events", str(_write(tmp_path / "mixed.jsonl", lines)), "--json").stdout)
    assert report["received"] == report["accepted"] + report["rejected"] == len(BAD_RECORDS) + 20
    assert report["rejected"] == len(BAD_RECORDS)
    assert report["files"] == [
        {"file": "mixed.jsonl", "path": str(tmp_path / "mixed.jsonl"), "received": 32, "accepted": 20, "rejected": 12}
    ]
    assert {"received", "accepted", "rejected", "quarantine_path", "batch_id", "lake_file", "source", "files"} <= set(
        report
    )
    assert len(_quarantine(report)) == report["rejected"]


def test_lake_file_has_exact_columns_and_metadata(cli, tmp_path: Path) -> None:
    line = (
        '{"event_id": " e1 ", "event_type": " Product_View", "occurred_at": 1732780800000, '
        '"anonymous_id": "a1\\t", "product_id": " p00042 ", "properties": {"price": 12.5, "url": "u"}, "extra": [1]}'
    )
    path = _write(tmp_path / "e.jsonl", [line])
    report = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    lake_file = Path(report["lake_file"])
    assert lake_file.parent.name.startswith("ingest_date=")
    assert lake_file.parent.parent == cli.home / "lake" / "events"
    assert lake_file.name == f"{report['batch_id']}.parquet"
    table = pq.read_table(lake_file)
    assert table.column_names == EVENT_COLUMNS + METADATA
    assert table.schema.field("_ingested_at").type == pa.timestamp("us")
    assert table.schema.field("_source_line").type == pa.int64()
    row = table.to_pylist()[0]
    assert row["event_id"] == "e1" and row["event_type"] == "Product_View"
    assert row["occurred_at"] == "1732780800000"
    assert row["customer_id"] is None and row["anonymous_id"] == "a1" and row["product_id"] == "p00042"
    assert json.loads(row["properties"]) == {"price": 12.5, "url": "u"}
    assert row["_batch_id"] == report["batch_id"]
    assert row["_source_file"] == "e.jsonl" and row["_source_line"] == 1
    assert row["_raw"] == line  # unknown extra fields are kept here
    assert row["_ingested_at"].isoformat() + "Z" == report["ingested_at"]
    assert not [p for p in lake_file.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_cdc_lake_columns_row_json_and_delete_row(cli, tmp_path: Path) -> None:
    lines = [
        '{"op": "r", "ts_ms": 1700000000000, "source": {"lsn": 17}, "after": {"order_id": 7, "status": "paid", '
        '"total_amount": 12.50, "currency": "usd", "customer_id": "c1", "created_at": "2026-01-01T00:00:00+01:00"}}',
        '{"op": "d", "ts_ms": 1700000000001, "before": {"status": "paid", "order_id": "o8"}, "after": null}',
    ]
    report = json.loads(cli("ingest", "orders", str(_write(tmp_path / "o.jsonl", lines)), "--json").stdout)
    table = pq.read_table(report["lake_file"])
    assert (
        table.column_names
        == ["op", "ts_ms", "source_lsn", "row_json", *[f.name for f in CONTRACTS["orders"].fields]] + METADATA
    )
    assert table.schema.field("ts_ms").type == pa.int64() and table.schema.field("source_lsn").type == pa.int64()
    first, delete = table.to_pylist()
    assert (first["op"], first["ts_ms"], first["source_lsn"], first["order_id"]) == ("r", 1700000000000, 17, "7")
    assert first["row_json"] == (
        '{"created_at":"2026-01-01T00:00:00+01:00","currency":"usd","customer_id":"c1",'
        '"order_id":7,"status":"paid","total_amount":12.5}'
    )
    assert first["total_amount"] == "12.5" and first["currency"] == "usd"
    assert (delete["op"], delete["order_id"], delete["source_lsn"]) == ("d", "o8", None)
    assert delete["row_json"] == '{"order_id":"o8","status":"paid"}'


def test_products_csv_typed_columns(cli, tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text(
        "product_id,name,category,price,currency,url,image_url,in_stock,color\n"
        "P1,Shoe,running,12.50,USD,u,i,yes,red\n"
        " p2 ,Sock,running,,EUR,u,i,0,\n"
        "P3,Cap,accessories,ten,USD,u,i,true,\n"
        "P4,Hat,accessories,3,USD,u,i,sometimes,\n"
        ",Nameless,tops,1,USD,u,i,true,\n"
    )
    report = json.loads(cli("ingest", "products", str(path), "--json").stdout)
    rows = pq.read_table(report["lake_file"]).to_pylist()
    assert [(r["product_id"], r["price"], r["in_stock"], r["_source_line"]) for r in rows] == [
        ("P1", "12.50", "true", 2),
        ("p2", None, "false", 3),
    ]
    assert json.loads(rows[0]["_raw"])["color"] == "red"
    assert {q["line"]: q["reason"] for q in _quarantine(report)} == {
        4: "price: expected number, got 'ten'",
        5: "in_stock: expected boolean, got 'sometimes'",
        6: "missing required field: product_id",
    }


def test_csv_missing_required_column_rejects_every_row(cli, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_id,occurred_at,customer_id\ne1,2026-01-01,c1\ne2,2026-01-02,c2\n")
    proc = cli("ingest", "events", str(path), "--json")
    report = json.loads(proc.stdout)
    assert (report["received"], report["accepted"], report["rejected"], report["lake_file"]) == (2, 0, 2, None)
    assert [(q["line"], q["reason"]) for q in _quarantine(report)] == [
        (2, "missing column event_type"),
        (3, "missing column event_type"),
    ]
    assert json.loads(_quarantine(report)[0]["raw"]) == {
        "event_id": "e1",
        "occurred_at": "2026-01-01",
        "customer_id": "c1",
    }


def test_csv_events_rows_and_malformed_row(cli, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,event_type,occurred_at,customer_id,anonymous_id,product_id,properties\n"
        'e1,product_view,1732780800000,c1,,P1,"{""price"": 3}"\n'
        "\n"
        "e2,page_view,2026-11-28 10:00,,a2,,\n"
        "e3,page_view\n"
        'e4,page_view,2026-11-28,c4,,,"[1]"\n'
        "e5,search,2026-11-28T10:00:00-05:00,c5,,,\n"
    )
    report = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    assert (report["received"], report["accepted"], report["rejected"]) == (5, 3, 2)
    rows = pq.read_table(report["lake_file"]).to_pylist()
    assert [(r["event_id"], r["_source_line"]) for r in rows] == [("e1", 2), ("e2", 4), ("e5", 7)]
    assert json.loads(rows[0]["properties"]) == {"price": 3}
    assert {q["line"]: q["reason"] for q in _quarantine(report)} == {
        5: "malformed CSV row: expected 7 columns, got 2",
        6: "properties: expected object, got string",
    }


def test_json_array_and_parquet_inputs(cli, tmp_path: Path) -> None:
    records = [json.loads(_event(event_id="j1")), json.loads(_event(event_id="j2", occurred_at="bad")), 5]
    array = tmp_path / "events.json"
    array.write_text(json.dumps(records, indent=2))
    report = json.loads(cli("ingest", "events", str(array), "--json").stdout)
    assert (report["accepted"], report["rejected"]) == (1, 2)
    assert [(q["line"], q["reason"]) for q in _quarantine(report)] == [
        (2, "occurred_at: unparseable timestamp"),
        (3, "not a JSON object"),
    ]

    lines_json = tmp_path / "lines.json"  # a .json file may also hold one object per line
    _write(lines_json, [_event(event_id="l1"), _event(event_id="l2")])
    assert json.loads(cli("ingest", "events", str(lines_json), "--json").stdout)["accepted"] == 2

    parquet = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["p1", "p2", None],
                "event_type": ["login"] * 3,
                "occurred_at": pa.array([1732780800000, 1732780800001, 1], pa.int64()),
                "customer_id": ["c1", "c2", "c3"],
                "anonymous_id": ["a1", None, None],
            }
        ),
        parquet,
    )
    report = json.loads(cli("ingest", "events", str(parquet), "--json").stdout)
    rows = pq.read_table(report["lake_file"]).to_pylist()
    assert [(r["event_id"], r["occurred_at"], r["_source_line"]) for r in rows] == [
        ("p1", "1732780800000", 1),
        ("p2", "1732780800001", 2),
    ]
    assert [(q["line"], q["reason"]) for q in _quarantine(report)] == [(3, "missing required field: event_id")]


def test_each_timestamp_form_is_accepted_and_stored_as_received(cli, tmp_path: Path) -> None:
    forms = [
        "2026-11-28T10:00:00Z",
        "2026-11-28T10:00:00.123456789+02:00",
        "2026-11-28T10:00:00-0530",
        "2026-11-28T10:00+01",
        "2026-11-28 10:00:00",
        "2026-11-28",
        1732780800000,
        "1732780800000",
        " 2026-11-28Z ",
    ]
    lines = [json.dumps({**GOOD, "event_id": f"t{i}", "occurred_at": v}) for i, v in enumerate(forms)]
    report = json.loads(cli("ingest", "events", str(_write(tmp_path / "t.jsonl", lines)), "--json").stdout)
    assert (report["accepted"], report["rejected"]) == (len(forms), 0)
    stored = pq.read_table(report["lake_file"]).column("occurred_at").to_pylist()
    assert stored == [str(v).strip() for v in forms]


def test_events_more_than_two_days_ahead_are_rejected(cli, tmp_path: Path) -> None:
    # a device with a wrong clock: kept out of the lake, or it would fail every cycle's validation
    now = datetime.now(UTC)
    ahead = now + timedelta(days=10)
    forms = {
        "far-iso": (ahead.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="seconds"), False),
        "far-ms": (int(ahead.timestamp() * 1000), False),
        "tomorrow": ((now + timedelta(days=1)).isoformat(timespec="milliseconds"), True),
        "past": ((now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), True),
    }
    lines = [json.dumps({**GOOD, "event_id": k, "occurred_at": v}) for k, (v, _) in forms.items()]
    report = json.loads(cli("ingest", "events", str(_write(tmp_path / "future.jsonl", lines)), "--json").stdout)
    assert (report["received"], report["accepted"], report["rejected"]) == (4, 2, 2)
    assert report["received"] == report["accepted"] + report["rejected"]
    quarantined = _quarantine(report)
    assert [(q["line"], q["reason"]) for q in quarantined] == [
        (1, "occurred_at: more than 2 days in the future"),
        (2, "occurred_at: more than 2 days in the future"),
    ]
    assert [json.loads(q["raw"])["occurred_at"] for q in quarantined] == [forms["far-iso"][0], forms["far-ms"][0]]
    lake = pq.read_table(report["lake_file"]).to_pylist()
    assert [(r["event_id"], r["occurred_at"]) for r in lake] == [
        (k, str(v)) for k, (v, accepted) in forms.items() if accepted
    ]


def test_reingesting_the_same_file_writes_a_second_batch(cli, tmp_path: Path) -> None:
    """Deduplication is downstream (staging dedups by event_id / CDC ordering): the lake is append-only."""
    path = _write(tmp_path / "e.jsonl", [_event(event_id="same")])
    first = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    second = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    assert first["batch_id"] < second["batch_id"]
    assert first["lake_file"] != second["lake_file"]
    assert Path(first["lake_file"]).exists() and Path(second["lake_file"]).exists()


def test_several_files_make_one_batch(cli, tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", [_event(event_id="a1"), "nope"])
    b = _write(tmp_path / "b.jsonl", [_event(event_id="b1")])
    report = json.loads(cli("ingest", "events", str(a), str(b), "--json").stdout)
    assert [(f["file"], f["accepted"], f["rejected"]) for f in report["files"]] == [
        ("a.jsonl", 1, 1),
        ("b.jsonl", 1, 0),
    ]
    rows = pq.read_table(report["lake_file"]).to_pylist()
    assert [(r["_source_file"], r["_source_line"]) for r in rows] == [("a.jsonl", 1), ("b.jsonl", 1)]
    assert len(list((cli.home / "lake" / "events").rglob("*.parquet"))) == 1


def test_human_summary(cli, tmp_path: Path) -> None:
    out = cli("ingest", "events", str(_write(tmp_path / "e.jsonl", [_event(), "{"]))).stdout
    assert "received 2, accepted 1, rejected 1" in out
    assert "quarantine:" in out and "lake:" in out


# --- empty inputs: a batch of 0 -------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content",
    [
        ("empty.jsonl", ""),
        ("empty.csv", ""),
        ("header.csv", "event_id,event_type\n"),
        ("blank.jsonl", "\n  \n"),
        ("empty.json", ""),
    ],
)
def test_empty_file_is_a_batch_of_zero(cli, tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    report = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    assert (report["received"], report["accepted"], report["rejected"], report["lake_file"]) == (0, 0, 0, None)
    assert Path(report["quarantine_path"]).read_text() == ""


# --- file-level errors: exit 2, one line, nothing left behind ------------------------------


def test_binary_garbage_is_an_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(bytes(range(256)) * 64)
    assert "not a text file" in _error(cli("ingest", "events", str(path), check=False))
    assert _state_files(cli.home) == []


def test_invalid_utf8_line_is_rejected_not_the_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        (_event(event_id="a") + "\n").encode() + b'{"event_id": "\xff\xfe"}\n' + (_event(event_id="b") + "\n").encode()
    )
    report = json.loads(cli("ingest", "events", str(path), "--json").stdout)
    assert (report["accepted"], report["rejected"]) == (2, 1)
    assert [(q["line"], q["reason"]) for q in _quarantine(report)] == [(2, "invalid UTF-8")]


def test_zero_byte_parquet_is_an_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    path.write_bytes(b"")
    assert "not a readable Parquet file" in _error(cli("ingest", "events", str(path), check=False))
    assert _state_files(cli.home) == []


def test_truncated_parquet_is_an_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(1000)]}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable Parquet file" in _error(cli("ingest", "events", str(path), check=False))
    assert _state_files(cli.home) == []


def test_unreadable_paths_are_errors(cli, tmp_path: Path) -> None:
    # tests run as root, where chmod 000 does not stop reads: a directory and a FIFO cannot be read as files
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert "cannot read: is a directory" in _error(cli("ingest", "events", str(folder), check=False))
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert "cannot read: not a regular file" in _error(cli("ingest", "events", str(fifo), check=False))
    assert "no such file" in _error(cli("ingest", "events", str(tmp_path / "missing.jsonl"), check=False))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert "unsupported file type '.txt'" in _error(cli("ingest", "events", str(txt), check=False))
    assert _state_files(cli.home) == []


def test_unknown_source_is_an_error(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", [_event()])
    proc = cli("ingest", "visits", str(path), check=False)
    assert proc.returncode == 2 and "visits" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_lake_directory_is_an_error_with_nothing_visible(cli, tmp_path: Path) -> None:
    # as root no permission stops a write: a regular file where the source's folder belongs really fails
    (cli.home / "lake").mkdir(parents=True)
    (cli.home / "lake" / "events").write_text("not a folder")
    path = _write(tmp_path / "e.jsonl", [_event()])
    line = _error(cli("ingest", "events", str(path), check=False))
    assert "cannot write the lake directory" in line
    assert _state_files(cli.home) == [cli.home / "lake" / "events"]


def test_error_in_a_later_file_leaves_no_partial_batch(cli, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.jsonl", [_event(event_id=f"g{i}") for i in range(100)] + ["{broken"])
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x00\x01\x02" * 5000)
    assert "not a text file" in _error(cli("ingest", "events", str(good), str(garbage), check=False))
    assert _state_files(cli.home) == []  # neither the lake temp file nor the quarantine survived
