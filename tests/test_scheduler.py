"""`sendtime schedule` as a real subprocess: one per home, clean stops, failures retried with backoff."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from test_cycle import load_sample

from pipeline import store
from pipeline.config import load_settings
from pipeline.scheduler import BACKOFF_CAP_SECONDS, backoff_seconds

ROOT = Path(__file__).resolve().parents[1]


class Scheduler:
    def __init__(self, home: Path, every: str = "1s", env: dict[str, str] | None = None) -> None:
        self.home = home
        self.log = home / f"scheduler-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "schedule", "--every", every],
            cwd=ROOT,
            env={**os.environ, "SENDTIME_HOME": str(home), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
            start_new_session=True,
        )

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            if out and out[-1].get("msg") == "scheduler stopped":
                # after the process's last line, multiprocessing's resource tracker (another process
                # sharing the stderr) may report dbt's semaphores at exit
                break
            out.append(json.loads(line))  # every line is a JSON log record
        return out

    def wait_for(self, predicate, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.proc.poll() is None, f"scheduler died: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"timed out; log:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _runs(home: Path) -> list[dict]:
    engine = store.engine_for(load_settings(home, environ={}))
    try:
        return store.recent_runs(engine, 1000) if store.has_schema(engine) else []
    finally:
        engine.dispose()


def test_backoff_doubles_and_is_capped():
    assert backoff_seconds(5, 0) == 0
    assert [backoff_seconds(5, n) for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff_seconds(5, 30) == BACKOFF_CAP_SECONDS
    assert backoff_seconds(3600, 5) == 3600  # the cap never shortens the interval itself


def test_one_scheduler_per_home_and_clean_stops(home, cli):
    first = Scheduler(home)
    try:
        first.wait_for(lambda: any(r["msg"] == "scheduler started" for r in first.lines()))
        second = cli("schedule", "--every", "1s", check=False, timeout=60)
        assert second.returncode != 0
        assert "a scheduler is already running" in second.stderr and str(first.proc.pid) in second.stderr
        # an empty home: cycles fail (nothing to build), the scheduler keeps going
        first.wait_for(lambda: len(_runs(home)) >= 1)
        assert first.stop(signal.SIGTERM) == 0
        assert first.lines()[-1]["msg"] == "scheduler stopped"
    finally:
        first.kill()

    # Ctrl-C stops it the same way; kill -9 leaves no lock behind
    again = Scheduler(home)
    try:
        again.wait_for(lambda: any(r["msg"] == "scheduler started" for r in again.lines()))
        assert again.stop(signal.SIGINT) == 0
    finally:
        again.kill()
    killed = Scheduler(home)
    killed.wait_for(lambda: any(r["msg"] == "scheduler started" for r in killed.lines()))
    killed.kill()
    last = Scheduler(home)
    try:
        last.wait_for(lambda: any(r["msg"] == "scheduler started" for r in last.lines()))
    finally:
        assert last.stop() == 0


@pytest.mark.slow
def test_failing_cycles_are_retried_with_backoff_then_recover(home, tmp_path):
    emails = load_sample(home, tmp_path / "gen")
    settings = load_settings(home, environ={})
    # an analyst's session holds the warehouse open for writing: dbt cannot open it, cycles fail
    holder = duckdb.connect(str(settings.warehouse_path))
    sched = Scheduler(home, every="1s")
    try:
        sched.wait_for(lambda: sum(r["status"] == "failed" for r in _runs(home)) >= 2)
        backoffs = [r for r in sched.lines() if r["msg"] == "cycle failed; retrying after backoff"]
        assert [r["retry_in_seconds"] for r in backoffs[:2]] == [2.0, 4.0]
        assert all("dbt build failed" in (r["error"] or "") for r in _runs(home) if r["status"] == "failed")
        holder.close()
        sched.wait_for(lambda: any(r["status"] == "success" for r in _runs(home)), timeout=180)
        assert any(r["msg"] == "cycle succeeded again" for r in sched.lines())
        assert store.current_version(store.engine_for(settings)) is not None
        assert sched.stop() == 0
    finally:
        sched.kill()
        try:
            holder.close()
        except duckdb.Error:
            pass
    text = sched.log.read_text()
    assert not [e for e in emails if e in text], "an email address reached the scheduler's logs"


@pytest.mark.slow
def test_continuous_mode_runs_a_cycle_when_a_batch_lands_and_waits_otherwise(home, tmp_path):
    from test_cycle import ingest_lines, store_state

    load_sample(home, tmp_path / "gen", customers=30, events=600)
    settings = load_settings(home, environ={})
    sched = Scheduler(home, every="0s")
    try:
        sched.wait_for(lambda: any(r["status"] == "success" for r in _runs(home)), timeout=300)
        assert any(r["msg"] == "watching the lake for new batches" for r in sched.lines())
        # nothing lands: no cycle starts (no busy loop; the idle recheck is a minute away)
        before = len(_runs(home))
        time.sleep(4)
        assert len(_runs(home)) == before
        # a batch lands: a cycle picks it up at once and publishes it, no interval in between
        ingest_lines(
            settings,
            "events",
            tmp_path / "new",
            "new.jsonl",
            [
                {
                    "event_id": "continuous-1",
                    "event_type": "product_view",
                    "occurred_at": "2026-11-20T00:00:00Z",
                    "customer_id": "CONTINUOUS-1",
                    "product_id": "P00001",
                }
            ],
        )
        sched.wait_for(lambda: "CONTINUOUS-1" in store_state(settings)[1], timeout=180)
        assert sched.stop() == 0
    finally:
        sched.kill()
    finished = [r for r in sched.lines() if r["msg"] == "cycle finished"]
    assert finished and all(r["status"] == "success" for r in finished)
