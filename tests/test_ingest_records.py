"""The collector's path (`ingest_records`) and streaming across chunk boundaries, in-process."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import ingest
from pipeline.errors import IngestError
from pipeline.ingest import ingest_files, ingest_records
from pipeline.timestamps import parse_timestamp

EPOCH = datetime(1970, 1, 1)


def _ev(event_id, **extra) -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "occurred_at": "2026-11-28T10:00:00Z",
        "customer_id": "c1",
        **extra,
    }


class SqliteIndex:
    """A real idempotency index (SQLite), like the collector's `collector_event_ids` table: ids are
    recorded after their lake file is written (serving/api/events.py)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE ids (event_id TEXT PRIMARY KEY)")
        self.asked: list[list[str]] = []

    def known(self, ids: list[str]) -> set[str]:
        self.asked.append(list(ids))
        marks = ",".join("?" * len(ids))
        return {r[0] for r in self.db.execute(f"SELECT event_id FROM ids WHERE event_id IN ({marks})", ids)}

    def record(self, report) -> None:
        ids = [r["event_id"] for r in report.results if r["status"] == "accepted"]
        self.db.executemany("INSERT OR IGNORE INTO ids VALUES (?)", [(i,) for i in ids])
        self.db.commit()

    def all(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT event_id FROM ids")}


def test_per_record_results_in_input_order(settings) -> None:
    records = [_ev("a"), _ev("b", occurred_at="never"), "text", _ev(" a "), _ev("c", customer_id=None), _ev("d")]
    report = ingest_records(settings, "events", records)
    assert [(r["index"], r["event_id"], r["status"], r.get("reason")) for r in report.results] == [
        (0, "a", "accepted", None),
        (1, "b", "rejected", "occurred_at: unparseable timestamp"),
        (2, None, "rejected", "not a JSON object"),
        (3, "a", "duplicate", None),  # same id after trimming: the first accepted one wins
        (4, "c", "rejected", "needs customer_id, anonymous_id or email_hash"),
        (5, "d", "accepted", None),
    ]
    assert (report.received, report.accepted, report.duplicates, report.rejected) == (6, 2, 1, 3)
    lake = pq.read_table(report.lake_file).to_pylist()
    assert [(r["event_id"], r["_source_file"], r["_source_line"]) for r in lake] == [
        ("a", "collector", 1),
        ("d", "collector", 6),
    ]
    quarantined = [json.loads(line) for line in Path(report.quarantine_path).read_text().splitlines()]
    assert [(q["line"], q["source_file"]) for q in quarantined] == [
        (2, "collector"),
        (3, "collector"),
        (5, "collector"),
    ]
    assert quarantined[1]["raw"] == '"text"'


def test_lake_file_matches_ingest_files_format(settings, tmp_path: Path) -> None:
    record = _ev("x", properties={"price": 1}, product_id="P1")
    from_collector = pq.read_table(ingest_records(settings, "events", [record]).lake_file)
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(record) + "\n")
    from_file = pq.read_table(ingest_files(settings, "events", [path]).lake_file)
    assert from_collector.schema == from_file.schema
    drop = ["_batch_id", "_ingested_at", "_source_file", "_raw"]
    assert from_collector.drop_columns(drop).to_pylist() == from_file.drop_columns(drop).to_pylist()


def test_known_ids_are_duplicates_and_not_landed_again(settings, tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    first = ingest_records(settings, "events", [_ev("a"), _ev("b")], known=index.known)
    assert [r["status"] for r in first.results] == ["accepted", "accepted"]
    index.record(first)
    again = ingest_records(settings, "events", [_ev("b"), _ev("c"), _ev("bad", occurred_at="x")], known=index.known)
    assert [r["status"] for r in again.results] == ["duplicate", "accepted", "rejected"]
    assert [r["event_id"] for r in pq.read_table(again.lake_file).to_pylist()] == ["c"]
    index.record(again)
    assert index.all() == {"a", "b", "c"}  # a rejected record is never recorded
    assert index.asked[-1] == ["b", "c"]  # only accepted ids are looked up

    repeat = ingest_records(settings, "events", [_ev("a")], known=index.known)
    assert (repeat.accepted, repeat.duplicates, repeat.lake_file, repeat.quarantine_path) == (0, 1, None, None)


def test_failed_lake_write_leaves_nothing(settings, tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")

    def known_then_break_the_lake(ids: list[str]) -> set[str]:
        # the batch folder exists by now; replacing it with a file makes the Parquet write really fail
        for folder in (settings.lake_dir / "events").iterdir():
            shutil.rmtree(folder)
            folder.write_text("in the way")
        return index.known(ids)

    with pytest.raises(IngestError, match="cannot write"):
        ingest_records(settings, "events", [_ev("n1"), _ev("n2")], known=known_then_break_the_lake)
    assert index.all() == set()  # nothing was recorded: the caller records only after a landed file
    assert not list(settings.lake_dir.rglob("*.parquet")) and not list(settings.lake_dir.rglob(".*.tmp"))


def test_an_event_id_longer_than_the_index_allows_is_rejected_alone(settings) -> None:
    records = [_ev("x" * 256), _ev("y" * 255), _ev(" " + "z" * 255 + " ")]  # trimmed: 255 characters
    report = ingest_records(settings, "events", records, id_max_length=255)
    assert [r["status"] for r in report.results] == ["rejected", "accepted", "accepted"]
    assert report.results[0]["reason"] == "event_id: longer than 255 characters"
    assert (report.received, report.accepted, report.rejected) == (3, 2, 1)
    quarantined = [json.loads(line) for line in Path(report.quarantine_path).read_text().splitlines()]
    assert [(q["line"], q["reason"]) for q in quarantined] == [(1, "event_id: longer than 255 characters")]
    assert json.loads(quarantined[0]["raw"])["event_id"] == "x" * 256


def test_cdc_records_from_the_collector_path(settings) -> None:
    report = ingest_records(
        settings,
        "customers",
        [
            {"op": "c", "ts_ms": 1, "after": {"customer_id": 12, "marketing_consent": True}},
            {"op": "q", "ts_ms": 1, "after": {"customer_id": 13}},
        ],
        source_file="crm-webhook",
    )
    assert [r["status"] for r in report.results] == ["accepted", "rejected"]
    [row] = pq.read_table(report.lake_file).to_pylist()
    assert (row["customer_id"], row["marketing_consent"], row["_source_file"]) == ("12", "true", "crm-webhook")


FUTURE = "occurred_at: more than 2 days in the future"


def test_collector_rejects_events_more_than_two_days_ahead(settings) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    records = [
        _ev("far-iso", occurred_at=(now + timedelta(days=10)).isoformat() + "Z"),
        _ev("far-ms", occurred_at=int((now + timedelta(days=10) - EPOCH) / timedelta(milliseconds=1))),
        _ev("year-2099", occurred_at="2099-01-01T00:00:00Z"),
        _ev("47h", occurred_at=(now + timedelta(hours=47)).isoformat() + "+00:00"),
        _ev("49h", occurred_at=(now + timedelta(hours=49)).isoformat() + "Z"),
        _ev("past", occurred_at="2026-01-01T00:00:00Z"),
    ]
    report = ingest_records(settings, "events", records)
    assert [(r["event_id"], r["status"], r.get("reason")) for r in report.results] == [
        ("far-iso", "rejected", FUTURE),
        ("far-ms", "rejected", FUTURE),
        ("year-2099", "rejected", FUTURE),
        ("47h", "accepted", None),
        ("49h", "rejected", FUTURE),
        ("past", "accepted", None),
    ]
    assert (report.received, report.accepted, report.rejected) == (6, 2, 4)
    assert pq.read_table(report.lake_file).column("event_id").to_pylist() == ["47h", "past"]
    quarantined = [json.loads(line) for line in Path(report.quarantine_path).read_text().splitlines()]
    assert [(q["line"], q["reason"]) for q in quarantined] == [(1, FUTURE), (2, FUTURE), (3, FUTURE), (5, FUTURE)]


def _future_values(limit: datetime, rng: random.Random) -> list:
    """Timestamps around `limit` in every accepted form: exact boundaries, then random ones."""
    ms = (limit - EPOCH) // timedelta(milliseconds=1)

    def iso(shift: timedelta, suffix: str) -> str:
        return (limit + shift).isoformat(timespec="microseconds") + suffix

    day = timedelta(hours=23, minutes=59)  # the largest offset
    values: list = [
        ms,
        ms + 1,
        str(ms + 1),
        ms - 1,
        iso(timedelta(0), "Z"),
        iso(timedelta(microseconds=1), "Z"),
        iso(day, "+23:59"),
        iso(day + timedelta(microseconds=1), "+2359"),
        iso(-day, "-23:59"),
        iso(-day + timedelta(minutes=1), "-23:59"),
        limit.date().isoformat(),
        (limit.date() + timedelta(days=1)).isoformat() + "-23",
    ]
    for _ in range(1500):
        instant = limit + timedelta(microseconds=rng.randint(-4 * 86_400_000_000, 4 * 86_400_000_000))
        if rng.random() < 0.2:
            values.append((instant - EPOCH) // timedelta(milliseconds=1))
            continue
        sign, hours, minutes = rng.choice("+-"), rng.randint(0, 23), rng.choice([0, 30, 59])
        offset = timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
        text = (instant + offset).strftime(rng.choice(["%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M", "%Y-%m-%d"]))
        values.append(f" {text}{sign}{hours:02d}:{minutes:02d}" if rng.random() < 0.8 else text + "Z")
    return values


@pytest.mark.parametrize(
    "ingested_at", [datetime(2026, 11, 28, 15, 40, 12, 345000), datetime(2026, 12, 31, 23, 59, 59, 999999)]
)
def test_future_bound_is_exact_and_counts_from_the_batch_time(ingested_at: datetime, settings) -> None:
    # the cheap SQL test must agree with the Python rule (parse_timestamp(v) > ingested_at + 2 days)
    # to the microsecond, whatever the DuckDB session's time zone
    limit = ingested_at + timedelta(days=2)
    values = _future_values(limit, random.Random(ingested_at.day))
    records = [_ev(f"e{i}", occurred_at=v) for i, v in enumerate(values)]
    validator = ingest.Validator("events", ingested_at, settings=settings)
    try:
        validator.con.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14: must not matter
        _, rejected = validator.run(ingest._records_chunk(records))
    finally:
        validator.close()
    got = {r["line"] - 1: r["reason"] for r in rejected}
    expected = {i: FUTURE for i, v in enumerate(values) if parse_timestamp(v) > limit}
    assert all(parse_timestamp(v) is not None for v in values)
    assert got == expected
    assert 0 < len(expected) < len(values)
    assert [i in expected for i in range(12)] == [
        False,
        True,
        True,
        False,
        False,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]


def test_cdc_timestamps_have_no_future_bound(settings) -> None:
    row = {"customer_id": "c1", "created_at": "2099-01-01T00:00:00Z", "updated_at": "2099-01-01T00:00:00Z"}
    report = ingest_records(settings, "customers", [{"op": "c", "ts_ms": 1, "after": row}])
    assert (report.accepted, report.rejected) == (1, 0)


def test_unknown_source_raises(settings) -> None:
    with pytest.raises(IngestError, match="unknown source"):
        ingest_records(settings, "visits", [])


def test_streaming_keeps_exact_line_numbers_across_chunks(settings, tmp_path: Path, monkeypatch) -> None:
    """Tiny chunks: lines split across reads keep their numbers; bad lines poison no neighbour."""
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 700)
    lines = []
    for i in range(1, 401):
        if i % 37 == 0:
            lines.append(f'{{"event_id": "broken-{i}", ')
        elif i % 53 == 0:
            lines.append("")
        else:
            lines.append(json.dumps(_ev(f"e{i}", properties={"pad": "x" * (i % 90)})))
    path = tmp_path / "big.jsonl"
    path.write_text("\r\n".join(lines))  # CRLF and no final newline
    report = ingest_files(settings, "events", [path])
    expected_ok = [i for i in range(1, 401) if i % 37 and i % 53]
    assert report.accepted == len(expected_ok)
    assert report.rejected == len([i for i in range(1, 401) if i % 37 == 0])
    rows = pq.read_table(report.lake_file).to_pylist()
    assert [r["_source_line"] for r in rows] == expected_ok
    assert all(r["event_id"] == f"e{r['_source_line']}" and r["_raw"] == lines[r["_source_line"] - 1] for r in rows)
    quarantined = [json.loads(x) for x in Path(report.quarantine_path).read_text().splitlines()]
    assert [q["line"] for q in quarantined] == [i for i in range(1, 401) if i % 37 == 0]
    assert all(q["raw"] == f'{{"event_id": "broken-{q["line"]}", ' for q in quarantined)


def test_csv_streaming_line_numbers_across_blocks(settings, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 512)
    rows = ["event_id,event_type,occurred_at,customer_id"]
    for i in range(2, 302):
        rows.append(f"e{i},page_view,2026-11-28,c{i}" if i % 29 else f"e{i},page_view")
    path = tmp_path / "e.csv"
    path.write_text("\n".join(rows) + "\n")
    report = ingest_files(settings, "events", [path])
    lake = pq.read_table(report.lake_file).to_pylist()
    assert all(r["event_id"] == f"e{r['_source_line']}" for r in lake)
    assert len(lake) == len([i for i in range(2, 302) if i % 29])
    quarantined = [json.loads(x) for x in Path(report.quarantine_path).read_text().splitlines()]
    assert [q["line"] for q in quarantined] == [i for i in range(2, 302) if i % 29 == 0]
