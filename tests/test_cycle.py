"""End to end through the real parts: generated files -> ingest -> dbt (in-process) -> GX -> publish.

`sendtime run` runs as a subprocess; the online store is a real SQLite file (PostgreSQL in
test_postgres_cycle.py). AS_OF is fixed after the generator's last day, so runs are repeatable.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import select

from pipeline import store
from pipeline.config import Settings, load_settings
from pipeline.generate import generate
from pipeline.ingest import ingest_files
from pipeline.locks import FileLock

AS_OF_ARG = "2026-11-26T00:00:00Z"
SOURCES = ("products", "customers", "orders", "order_items", "events")


def load_sample(home: Path, out: Path, customers: int = 60, events: int = 1500) -> set[str]:
    """Generate a small realistic data set and ingest it; returns every email in it (for PII checks)."""
    settings = load_settings(home, environ={})
    files = generate(out, customers=customers, events=events, products=40, seed=7)
    for source in SOURCES:
        if files.get(source):
            ingest_files(settings, source, list(files[source]))
    emails: set[str] = set()
    for path in files.get("customers", []):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            for part in ("after", "before"):
                email = isinstance(row, dict) and isinstance(row.get(part), dict) and row[part].get("email")
                if isinstance(email, str) and "@" in email:
                    emails.update({email.strip(), email.strip().lower()})
    return emails


def ingest_lines(settings: Settings, source: str, folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = ingest_files(settings, source, [path])
    assert report.accepted == len(rows), report.to_dict()


CUSTOMER_COLUMNS = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "country",
    "locale",
    "timezone",
    "marketing_consent",
    "created_at",
    "updated_at",
)
# later than any change the generator writes, so these changes become the current state
LATER_TS_MS = 1_900_000_000_000


def customer_change(gen: Path, customer_id: str, ts_ms: int, op: str = "u", **changes) -> dict:
    """A CDC change of a generated customer: their latest valid generated row with `changes` applied."""
    from pipeline.timestamps import parse_timestamp

    best: tuple[int, dict] | None = None
    for path in sorted(gen.glob("customers-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the generator plants malformed lines
            after = row.get("after") if isinstance(row, dict) else None
            if (
                isinstance(after, dict)
                and after.get("customer_id") == customer_id
                and isinstance(row.get("ts_ms"), int)
                and all(k in after for k in CUSTOMER_COLUMNS)
                and parse_timestamp(after["created_at"])
                and (best is None or row["ts_ms"] > best[0])
            ):
                best = (row["ts_ms"], after)
    assert best is not None, customer_id
    body = {**best[1], **changes}
    if op == "d":
        return {"op": "d", "ts_ms": ts_ms, "before": body, "after": None}
    return {"op": op, "ts_ms": ts_ms, "before": None, "after": body}


def _deletable(gen: Path, profiles: dict[str, str]) -> tuple[str, dict]:
    """A published customer with a whole generated CRM row, and the CDC delete of them."""
    for customer_id in sorted(profiles):
        try:
            return customer_id, customer_change(gen, customer_id, LATER_TS_MS, op="d")
        except AssertionError:
            continue  # known from events only, or only malformed CRM rows
    raise AssertionError("no published CRM customer to delete")


def store_state(settings: Settings) -> tuple[dict | None, dict[str, str], dict[str, str]]:
    """(current version, profile bodies, recommendation bodies) of the online store."""
    engine = store.engine_for(settings)
    try:
        with engine.connect() as conn:
            profiles = {r[0]: r[1] for r in conn.execute(select(store.profiles.c.customer_id, store.profiles.c.body))}
            recs = {
                r[0]: r[1]
                for r in conn.execute(select(store.recommendations.c.customer_id, store.recommendations.c.body))
            }
        return store.current_version(engine), profiles, recs
    finally:
        engine.dispose()


def warehouse_profile_ids(settings: Settings) -> set[str]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return {r[0] for r in con.execute("select customer_id from customer_profiles").fetchall()}
    finally:
        con.close()


def run(cli, *extra: str, check: bool = True) -> dict:
    proc = cli("run", "--as-of", AS_OF_ARG, "--json", *extra, check=check)
    return json.loads(proc.stdout)


def test_a_cycle_publishes_validated_profiles_and_logs_itself(cli, home, tmp_path):
    emails = load_sample(home, tmp_path / "gen")
    settings = load_settings(home, environ={})
    result = run(cli)
    assert result["status"] == "success" and result["ok"], result
    assert set(result["phases"]) >= {"transform", "read", "validate", "publish"}
    version, profiles, recs = store_state(settings)
    assert version["version"] == result["version"] == 1 and version["cycle_id"] == result["cycle_id"]
    assert version["as_of"] == AS_OF_ARG and version["profiles_upserted"] == len(profiles)
    # the version says how fresh it is: the newest lake batch this build read
    newest = max(p.name.split("-")[0] for p in settings.lake_dir.rglob("*.parquet"))
    assert version["newest_ingested_at"].replace("-", "").replace(":", "").replace(".", "").rstrip(
        "Z"
    ) == newest.rstrip("Z")
    assert set(profiles) == warehouse_profile_ids(settings) and len(profiles) >= 50
    assert set(recs) == set(profiles)
    body = json.loads(next(iter(profiles.values())))
    assert list(body)[:3] == ["customer_id", "email", "first_name"] and isinstance(body["recently_viewed"], list)
    assert result["rows_published"] >= len(profiles)

    runs = json.loads(cli("runs", "--json").stdout)["runs"]
    assert runs[0]["cycle_id"] == result["cycle_id"] and runs[0]["status"] == "success"
    assert runs[0]["validation"]["customer_profiles"]["success"] is True
    assert runs[0]["rows_changed"] == result["rows_changed"] > 0

    # the CRM deletes the first cycle published are erasure requests: the next cycle erases them
    # (docs/privacy.md); after it, nothing new: the cycle succeeds and publishes nothing new
    # a CRM delete of a published customer: the cycle that publishes it (404) requests the erasure,
    # the next one erases every trace (docs/privacy.md); after that, nothing new to publish
    gone, change = _deletable(tmp_path / "gen", profiles)
    ingest_lines(settings, "customers", tmp_path / "more", "delete.jsonl", [change])
    deleting = run(cli)
    assert deleting["status"] == "success" and deleting["rows_deleted"] >= 1 and gone not in store_state(settings)[1]
    erasing = run(cli)
    assert erasing["status"] == "success" and erasing["erasure"]["requests"] == 1
    again = run(cli)
    assert again["status"] == "success" and again["version"] is None and again["rows_published"] == 0
    assert store_state(settings)[0]["version"] == (erasing["version"] or deleting["version"])
    assert "no new version published" in cli("run", "--as-of", AS_OF_ARG).stdout
    logs = cli("run", "--as-of", AS_OF_ARG).stderr
    assert not [e for e in emails if e in logs]


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request) -> dict[str, str]:
    """The online store of a test: the default SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"SENDTIME_ONLINE_STORE_URL": request.getfixturevalue("pg_url")}


def test_failed_validation_keeps_the_last_state_until_a_good_cycle(home, tmp_path, store_env):
    from tests.helpers.cli import Cli

    cli = Cli(home, store_env)
    load_sample(home, tmp_path / "gen")
    settings = load_settings(home, environ=store_env)
    assert run(cli)["status"] == "success"
    before = store_state(settings)

    # bad source data that ingest's contract lets through (an email is any string there)
    bad = customer_change(
        tmp_path / "gen", "C0000001", LATER_TS_MS, email="no-at-sign.example.com", first_name="Changed"
    )
    ingest_lines(settings, "customers", tmp_path / "more", "bad.jsonl", [bad])
    failed = run(cli, check=False)
    assert failed["status"] == "validation_failed" and not failed["ok"] and failed["version"] is None
    failures = failed["validation"]["customer_profiles"]["failed"]
    assert {"expectation": "expect_column_values_to_match_regex", "column": "email", "unexpected_count": 1} in failures
    assert store_state(settings) == before  # still serving the last good state
    runs = json.loads(cli("runs", "--json").stdout)["runs"]
    assert runs[0]["status"] == "validation_failed" and runs[0]["validation"]["customer_profiles"]["failed"] == failures
    assert "customer_profiles.email: expect_column_values_to_match_regex (1 rows)" in cli("runs").stdout
    assert cli("run", "--as-of", AS_OF_ARG, check=False).returncode == 1

    # the fix arrives: the next cycle publishes it, and what the failed cycle changed
    fixed = customer_change(
        tmp_path / "gen", "C0000001", LATER_TS_MS + 100_000, email=" Ava@Example.ORG", first_name="Changed"
    )
    ingest_lines(settings, "customers", tmp_path / "more", "fix.jsonl", [fixed])
    good = run(cli)
    assert good["status"] == "success" and good["version"] == 2
    version, profiles, _ = store_state(settings)
    body = json.loads(profiles["C0000001"])
    assert body["email"] == "ava@example.org" and body["first_name"] == "Changed"


def test_a_crm_delete_erases_the_customer_in_one_cycle(cli, home, tmp_path):
    load_sample(home, tmp_path / "gen")
    settings = load_settings(home, environ={})
    run(cli)
    assert "C0000002" in store_state(settings)[1]
    gone = customer_change(tmp_path / "gen", "C0000002", LATER_TS_MS, op="d")
    ingest_lines(settings, "customers", tmp_path / "more", "delete.jsonl", [gone])
    result = run(cli)
    assert result["status"] == "success" and result["rows_deleted"] == 1
    _, profiles, recs = store_state(settings)
    assert "C0000002" not in profiles and "C0000002" not in recs
    assert store_state(settings)[0]["profiles_deleted"] == 1


def test_two_cycles_never_overlap_on_one_home(cli, home, settings):
    lock = FileLock(settings.run_dir / "cycle.lock")
    assert lock.acquire()
    try:
        proc = cli("run", check=False)
        assert proc.returncode == 1 and "another cycle is running on this home" in proc.stdout
    finally:
        lock.release()
