"""The collector never loses an event it answered as accepted (DESIGN.md "Consistency and recovery").

A real `sendtime serve` (gunicorn, 2 sync workers) with the collector's test hooks
(pipeline/hooks.py): a test holds one request at a named point while a concurrent request with the
same event id passes, and kills the held worker with SIGKILL (gunicorn starts another). The two
races of issue 14: a duplicate arriving while the first request is in flight, the first then
failing; and a process killed around its lake write. At the end a real cycle builds the marts:
every id the collector ever answered for is in the warehouse exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import requests

from pipeline.config import load_settings
from serving.keys import create_key
from tests.helpers.api_server import ApiServer
from tests.helpers.cli import Cli

AS_OF = "2026-11-26T00:00:00Z"


def event(event_id: str, customer: str = "k1") -> dict:
    return {
        "event_id": event_id,
        "event_type": "page_view",
        "occurred_at": "2026-11-20T10:00:00Z",
        "customer_id": customer,
    }


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    home = tmp_path_factory.mktemp("durable-home")
    hooks = tmp_path_factory.mktemp("hooks")
    key, _ = create_key(load_settings(home, environ={}), "writer", ["events:write"])
    env = {"SENDTIME_TEST_HOOKS_DIR": str(hooks), "SENDTIME_TEST_PAUSE_SECONDS": "20"}
    with ApiServer(home, workers=2, env=env) as server:
        yield server, key, home, hooks


def post(server: ApiServer, key: str, events: list[dict]) -> requests.Response:
    return server.post("/api/v1/events", key, json=events)


def statuses(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["status"] for r in response.json()["results"]]


class Held:
    """A request held at a hook point in its worker (pipeline/hooks.py), sent from a thread."""

    def __init__(self, server: ApiServer, key: str, hooks: Path, point: str, events: list[dict]) -> None:
        (hooks / f"pause-{point}").write_text("")
        self.hooks, self.point = hooks, point
        self.result: dict = {}
        self.thread = threading.Thread(target=self._send, args=(server, key, events))
        self.thread.start()
        marker = hooks / f"paused-{point}"
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, f"no request paused at {point}"
            time.sleep(0.02)
        time.sleep(0.05)  # the pid is written right after the file is created
        self.pid = int(marker.read_text())
        marker.unlink()

    def resume(self) -> requests.Response:
        (self.hooks / f"resume-{self.point}").write_text("")
        self.thread.join(40)
        return self.result["response"]

    def _send(self, server: ApiServer, key: str, events: list[dict]) -> None:
        try:
            self.result["response"] = post(server, key, events)
        except requests.RequestException as exc:
            self.result["error"] = exc

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.thread.join(30)
        assert "error" in self.result, "the killed request must not have been answered"


def lake_rows(home: Path) -> list[dict]:
    rows = []
    for path in sorted((home / "lake" / "events").rglob("*.parquet")):
        rows += pq.read_table(path, columns=["event_id", "_batch_id"]).to_pylist()
    return rows


def index_of(home: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(home / "online.sqlite") as conn:
        return dict(conn.execute("select event_id, batch_id from collector_event_ids").fetchall())


def test_a_duplicate_arriving_while_the_first_is_in_flight_is_kept_when_the_first_dies(collector):
    server, key, home, hooks = collector
    first = Held(server, key, hooks, "collector_landing", [event("race-1")])
    second = post(server, key, [event("race-1")])  # the other worker answers while the first is held
    assert statuses(second) == ["accepted"]
    first.kill()  # the first request dies before it landed anything
    assert [r["_batch_id"] for r in lake_rows(home) if r["event_id"] == "race-1"] == [second.json()["batch_id"]]
    assert index_of(home)["race-1"] == second.json()["batch_id"]
    assert statuses(post(server, key, [event("race-1")])) == ["duplicate"]  # the client's retry


def test_two_requests_landing_the_same_event_answer_accepted_once(collector):
    server, key, home, hooks = collector
    first = Held(server, key, hooks, "collector_landed", [event("race-2"), event("race-2b")])
    second = post(server, key, [event("race-2")])
    assert statuses(second) == ["accepted"]
    # the first resumes: its file holds race-2 as well, but the other request recorded it first
    resumed = first.resume()
    assert statuses(resumed) == ["duplicate", "accepted"]
    landed = [r["_batch_id"] for r in lake_rows(home) if r["event_id"] == "race-2"]
    assert sorted(landed) == sorted([resumed.json()["batch_id"], second.json()["batch_id"]])
    assert index_of(home)["race-2"] == second.json()["batch_id"]


def test_killed_after_landing_before_recording_the_retry_is_accepted(collector):
    server, key, home, hooks = collector
    held = Held(server, key, hooks, "collector_landed", [event("kill-1"), event("kill-2")])
    held.kill()  # the lake file is durable, the ids are not recorded: no pending claim is left
    assert sorted(r["event_id"] for r in lake_rows(home) if r["event_id"].startswith("kill-")) == ["kill-1", "kill-2"]
    assert "kill-1" not in index_of(home)
    retry = post(server, key, [event("kill-1"), event("kill-2")])
    assert statuses(retry) == ["accepted", "accepted"]  # landed again (staging keeps the first copy)
    assert {index_of(home)[i] for i in ("kill-1", "kill-2")} == {retry.json()["batch_id"]}


def test_killed_after_recording_the_retry_is_a_duplicate_of_a_landed_event(collector):
    server, key, home, hooks = collector
    held = Held(server, key, hooks, "collector_recorded", [event("kill-3")])
    held.kill()
    batch = index_of(home)["kill-3"]
    assert [r["_batch_id"] for r in lake_rows(home) if r["event_id"] == "kill-3"] == [batch]
    assert statuses(post(server, key, [event("kill-3")])) == ["duplicate"]


def test_concurrent_clients_sending_the_same_ids(collector):
    server, key, home, _ = collector
    ids = [f"burst-{i}" for i in range(40)]
    answers: list[list[tuple[str, str]]] = []
    barrier = threading.Barrier(8)

    def client(n: int) -> None:
        barrier.wait()
        for _round in range(3):
            body = [event(i, customer=f"k{n % 3}") for i in ids]
            r = post(server, key, body)
            answers.append([(x["event_id"], x["status"]) for x in r.json()["results"]])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    flat = [pair for answer in answers for pair in answer]
    assert len(flat) == 8 * 3 * len(ids)
    accepted = sorted(i for i, status in flat if status == "accepted")
    assert accepted == sorted(ids), "every id accepted exactly once"
    index = index_of(home)
    by_batch: dict[str, set[str]] = {}
    for row in lake_rows(home):
        by_batch.setdefault(row["_batch_id"], set()).add(row["event_id"])
    for i in ids:  # every recorded id is in the lake file of the batch that recorded it
        assert i in by_batch[index[i]]


def test_a_cycle_builds_each_answered_event_exactly_once(collector):
    home = collector[2]
    answered = set(index_of(home))
    assert {"race-1", "race-2", "race-2b", "kill-1", "kill-2", "kill-3", "burst-0"} <= answered
    result = json.loads(Cli(home)("run", "--as-of", AS_OF, "--json").stdout)
    assert result["status"] == "success", result
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("select event_id, count(*) from int_events_deduplicated group by event_id").fetchall()
    counts = dict(rows)
    assert set(counts) == answered == {r["event_id"] for r in lake_rows(home)}
    assert set(counts.values()) == {1}, "an event doubled in the warehouse"
