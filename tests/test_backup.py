"""`sendtime backup DIR` under load and `sendtime restore DIR` into an empty home.

The home runs as in production while the backup is taken: `sendtime schedule` publishing a cycle
every few seconds and `sendtime serve` whose collector receives events (new ones and duplicates)
from a client thread. The home is then restored into an empty one, which must answer every profile
and every key as the backup's published state did, hold every event the collector had accepted
before the backup began, reconcile clean, and run its next cycle. State the backup knows nothing
about (a table and a file a later feature adds) comes back too. The PostgreSQL store goes through
pg_dump of an exported snapshot and pg_restore.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
import requests

from pipeline.config import load_settings
from serving.keys import create_key
from tests.helpers.api_server import ApiServer, seed_store
from tests.helpers.cli import ROOT, Cli
from tests.helpers.homes import copy_home
from tests.test_cycle import AS_OF_ARG

SCOPES = ("profiles:read", "events:write", "admin")


def lake_event_ids(home: Path) -> set[str]:
    ids: set[str] = set()
    for path in (home / "lake" / "events").rglob("*.parquet"):
        ids.update(pq.read_table(path, columns=["event_id"]).column(0).to_pylist())
    return ids


def store_rows(home: Path, table: str, key: str) -> dict[str, tuple]:
    with sqlite3.connect(home / "online.sqlite") as conn:
        return {r[0]: r for r in conn.execute(f"select * from {table} order by {key}")}


class Traffic:
    """A client posting events to the collector: new ids and repeats of earlier ones."""

    def __init__(self, server: ApiServer, key: str) -> None:
        self.server, self.key = server, key
        self.answered: list[tuple[float, str, str]] = []  # (time answered, event id, status)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            ids = [f"load-{n + i}" for i in range(15)] + [f"load-{max(n - 10, 0) + i}" for i in range(5)]
            body = [
                {
                    "event_id": i,
                    "event_type": "product_view",
                    "occurred_at": "2026-11-20T10:00:00Z",
                    "customer_id": f"C00000{10 + int(i.split('-')[1]) % 20}",
                    "product_id": "P00001",
                }
                for i in ids
            ]
            try:
                r = self.server.post("/api/v1/events", self.key, json=body)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                now = time.monotonic()
                self.answered += [(now, x["event_id"], x["status"]) for x in r.json()["results"]]
            n += 15
            time.sleep(0.05)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)


def test_backup_under_load_restores_into_an_empty_home(tmp_path, published_sample):
    home = copy_home(published_sample[0], tmp_path / "home")
    target, folder = tmp_path / "restored", tmp_path / "backup"
    cli = Cli(home)
    settings = load_settings(home, environ={})
    keys = {scope: create_key(settings, scope.replace(":", "-"), [scope])[0] for scope in SCOPES}
    # state a later feature keeps (the privacy branch's erasure register, say): a table and a file
    with sqlite3.connect(home / "online.sqlite") as conn:
        conn.execute("create table erasure_register (id_hash text primary key, requested_at text)")
        conn.execute("insert into erasure_register values ('h1', '2026-11-20T00:00:00Z')")
    (home / "privacy").mkdir()
    (home / "privacy" / "register.jsonl").write_text('{"id_hash": "h1"}\n')

    scheduler = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "schedule", "--every", "2s"],
        cwd=ROOT,
        env={**os.environ, "SENDTIME_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with ApiServer(home, workers=2) as server:
            traffic = Traffic(server, keys["events:write"])
            try:
                time.sleep(4)  # cycles publish the collector's events while it keeps posting
                began = time.monotonic()
                made = cli.json("backup", str(folder))
                ended = time.monotonic()
                time.sleep(1)
            finally:
                traffic.halt()
    finally:  # twice: the running cycle is abandoned at once (crash-safe; this home is done)
        scheduler.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(150)
    assert made["files"] > 10 and made["by_how"]["link"]["files"] >= 5  # the lake by hard links
    assert made["lock_seconds"] < made["seconds"]
    before = {i for t, i, status in traffic.answered if t < began}
    during = {i for t, i, status in traffic.answered if began <= t <= ended}
    assert before and during, "the collector was busy before and during the backup"

    target.mkdir()
    restored = Cli(target).json("restore", str(folder))
    assert restored["version"] == made["store"]["published_version"]
    # every event the collector answered before the backup began is in the restored lake
    assert before <= lake_event_ids(target)
    snapshot = sqlite3.connect(folder / "online.sqlite")
    expected = dict(snapshot.execute("select customer_id, body from profiles").fetchall())
    expected_keys = snapshot.execute("select * from api_keys order by name").fetchall()
    assert store_rows(target, "api_keys", "name") == {r[0]: r for r in expected_keys}
    assert store_rows(target, "api_keys", "name") == store_rows(home, "api_keys", "name")
    assert store_rows(target, "erasure_register", "id_hash") == {"h1": ("h1", "2026-11-20T00:00:00Z")}
    assert (target / "privacy" / "register.jsonl").read_text() == '{"id_hash": "h1"}\n'
    assert not (target / "run" / "cycle.lock").exists()  # locks and pid files are not state

    # the same API answers: every profile and every key of the backup's published state
    with ApiServer(target, workers=2) as server:
        read = keys["profiles:read"]
        for cid, body in expected.items():
            answer = server.get(f"/api/v1/customers/{cid}", read)
            assert answer.status_code == 200 and answer.text == body, cid
        assert server.get("/api/v1/customers/C0000001", keys["admin"]).status_code == 200
        assert server.get("/api/v1/customers/C0000001", keys["events:write"]).status_code == 403
        assert server.get("/ready").json()["version"] == restored["version"]
        # profiles that no cycle changed after the backup answer as in the original home
        original = store_rows(home, "profiles", "customer_id")
        unchanged = [c for c, row in original.items() if row[5] <= restored["version"]]
        assert len(unchanged) > 10
        for cid in unchanged:
            assert server.get(f"/api/v1/customers/{cid}", read).text == original[cid][2]

    # consistent: the store equals the restored marts, the lake holds what the warehouse read
    target_cli = Cli(target)
    check = json.loads(target_cli("reconcile", "--json").stdout)
    assert check["status"] == "clean", check["drift"]
    # and it goes on: the next cycle reads what landed after the snapshot, nothing is lost or doubled
    assert json.loads(target_cli("run", "--as-of", AS_OF_ARG, "--json").stdout)["status"] == "success"
    check = json.loads(target_cli("reconcile", "--json").stdout)
    assert check["status"] == "clean", check["drift"]
    assert check["checked"]["lake.events"] == len(lake_event_ids(target))


def test_restore_refuses_a_home_that_is_not_empty_and_a_damaged_backup(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "lake" / "events").mkdir(parents=True)
    (home / "lake" / "events" / "x.parquet").write_bytes(b"PAR1")
    cli = Cli(home)
    made = cli.json("backup", str(tmp_path / "b"))
    assert made["store"]["published_version"] is None
    inside = cli("backup", str(home / "inside"), check=False)
    assert inside.returncode == 2 and "inside the home" in inside.stderr
    busy = cli("restore", str(tmp_path / "b"), check=False)
    assert busy.returncode == 2 and "not empty" in busy.stderr
    (tmp_path / "b" / "lake" / "events" / "x.parquet").unlink()
    (tmp_path / "b" / "lake" / "events" / "x.parquet").write_bytes(b"PAR2")  # a new file, not the linked one
    damaged = Cli(tmp_path / "other")("restore", str(tmp_path / "b"), check=False)
    assert damaged.returncode == 2 and "damaged" in damaged.stderr
    assert not (tmp_path / "other" / "lake" / "events" / "x.parquet").exists()


def _database(name: str) -> str:
    password = secrets.token_hex(8)
    for sql in (f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {name}"):
        subprocess.run(
            ["su", "postgres", "-c", f"psql -v ON_ERROR_STOP=1 -q -c \"{sql}\""], check=True, capture_output=True
        )
    return f"postgresql+psycopg://{name}:{password}@127.0.0.1:5432/{name}"


def _drop(name: str) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}"):
        subprocess.run(["su", "postgres", "-c", f"psql -q -c \"{sql}\""], capture_output=True, check=False)


@pytest.mark.postgres
def test_backup_and_restore_with_a_postgresql_store(tmp_path, pg_server):
    names = [f"sendtime_bk_{secrets.token_hex(3)}" for _ in range(2)]
    try:
        source_url, target_url = _database(names[0]), _database(names[1])
        home, target, folder = tmp_path / "home", tmp_path / "restored", tmp_path / "backup"
        home.mkdir()
        target.mkdir()
        env = {"SENDTIME_ONLINE_STORE_URL": source_url}
        (home / "lake" / "events").mkdir(parents=True)
        (home / "lake" / "events" / "batch.parquet").write_bytes(b"PAR1 not read by this test")
        key = seed_store(load_settings(home, environ=env))["profiles:read"]
        made = Cli(home, env).json("backup", str(folder))
        assert made["store"] == {
            "kind": "postgresql",
            "published_version": 1,
            "file": "online.pgdump",
            "published_cycle_id": made["store"]["published_cycle_id"],
        }
        assert (folder / "online.pgdump").stat().st_size > 0 and not (folder / "online.sqlite").exists()
        assert source_url.split(":")[2].split("@")[0] not in (folder / "manifest.json").read_text()  # no password

        target_env = {"SENDTIME_ONLINE_STORE_URL": target_url}
        wrong_kind = Cli(tmp_path / "sqlite-home")("restore", str(folder), check=False)
        assert wrong_kind.returncode == 2 and "postgresql store" in wrong_kind.stderr
        Cli(target, target_env).json("restore", str(folder))
        again = Cli(tmp_path / "third", target_env)("restore", str(folder), check=False)
        assert again.returncode == 2 and "already holds a sendtime store" in again.stderr

        with (
            psycopg.connect(source_url.replace("+psycopg", "")) as a,
            psycopg.connect(target_url.replace("+psycopg", "")) as b,
        ):
            for table in ("profiles", "recommendations", "products", "api_keys", "published_versions", "runs"):
                query = f"SELECT * FROM {table} ORDER BY 1"
                assert a.execute(query).fetchall() == b.execute(query).fetchall(), table
        with ApiServer(target, env=target_env) as server:
            with psycopg.connect(target_url.replace("+psycopg", "")) as b:
                profiles = b.execute("SELECT customer_id, body FROM profiles ORDER BY 1").fetchall()
            assert len(profiles) == 3
            for cid, body in profiles:
                assert server.get(f"/api/v1/customers/{cid}", key).text == body
        assert (target / "lake" / "events" / "batch.parquet").read_bytes() == b"PAR1 not read by this test"
    finally:
        for name in names:
            _drop(name)
