"""kill -9 of a real `sendtime run` during dbt, during validation and inside the publish transaction.

Each kill must leave the online store exactly at the last published state and nothing that blocks
the next cycle; the next cycle must catch up so that the store ends equal to a home that ingested
the same files and never crashed (no event lost, none counted twice).

The cycle's test hooks (pipeline/cycle.py, docs/pipeline.md) mark where the process is and pause it
at a named point; "during dbt" is reached by timing instead: the kill lands while dbt is building
(its start marker is there, its end marker is not).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cycle import AS_OF_ARG, LATER_TS_MS, customer_change, ingest_lines, load_sample, run, store_state

from pipeline.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"cycle ended ({proc.returncode}) before {path.name}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"no {path.name} in {timeout}s"
        time.sleep(0.05)


def kill_cycle_at(
    home: Path, hooks: Path, point: str, env: dict[str, str] | None = None, after_seconds: float = 0.0
) -> None:
    """Start `sendtime run`, wait until it reaches `point`, then kill -9 it."""
    for marker in hooks.glob("*"):
        marker.unlink()
    child_env = {**os.environ, "SENDTIME_HOME": str(home), "SENDTIME_TEST_HOOKS_DIR": str(hooks), **(env or {})}
    if after_seconds == 0.0:
        child_env["SENDTIME_TEST_PAUSE_AT"] = point
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--as-of", AS_OF_ARG],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_file(hooks / point, proc)
        time.sleep(after_seconds)
        assert proc.poll() is None, "the cycle finished before it could be killed"
        if point == "transform_started":
            assert not (hooks / "transform_done").exists(), "dbt finished before the kill: not a kill during dbt"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _more_data(settings: Settings, gen: Path, extra: Path, n: int) -> None:
    """A new batch: a CRM update and fresh events of known customers (changes every cycle sees)."""
    ingest_lines(
        settings,
        "customers",
        extra,
        f"crm-{n}.jsonl",
        [customer_change(gen, "C0000003", LATER_TS_MS + n, first_name=f"Renamed{n}")],
    )
    ingest_lines(
        settings,
        "events",
        extra,
        f"events-{n}.jsonl",
        [
            {
                "event_id": f"crash-test-{n}-{i}",
                "event_type": "product_view",
                "occurred_at": f"2026-11-25T1{n}:0{i}:00Z",
                "customer_id": f"C000000{i + 1}",
                "product_id": "P00001",
            }
            for i in range(5)
        ],
    )


@pytest.mark.slow
def test_kill_9_at_every_phase_loses_and_doubles_nothing(home, tmp_path, cli):
    settings = load_settings(home, environ={})
    hooks = tmp_path / "hooks"
    gen, extra = tmp_path / "gen", tmp_path / "extra"
    load_sample(home, gen)
    assert run(cli)["status"] == "success"
    published = store_state(settings)

    # 1. during dbt: the kill lands while the build runs
    _more_data(settings, gen, extra, 1)
    kill_cycle_at(home, hooks, "transform_started", after_seconds=1.5)
    assert store_state(settings) == published

    # 2. during validation (dbt has committed its marts: the next good cycle must publish them)
    _more_data(settings, gen, extra, 2)
    kill_cycle_at(home, hooks, "validate_started")
    assert store_state(settings) == published

    # 3. inside the publish transaction: every row written, the version row and commit not yet
    kill_cycle_at(home, hooks, "publish_commit")
    assert store_state(settings) == published

    # nothing blocks the next cycle; the killed ones show as interrupted in the run log
    final = run(cli)
    assert final["status"] == "success", final
    runs = json.loads(cli("runs", "--json").stdout)["runs"]
    interrupted = [r for r in runs if r["status"] == "failed" and "interrupted" in (r["error"] or "")]
    assert len(interrupted) == 3
    crashed = store_state(settings)
    assert crashed[0]["version"] == published[0]["version"] + 1

    # the same files, ingested in the same order, in a home that never crashed
    ref_home = tmp_path / "reference"
    ref_home.mkdir()
    ref_settings = load_settings(ref_home, environ={})
    load_sample(ref_home, tmp_path / "gen-ref")
    from tests.helpers.cli import Cli

    ref_cli = Cli(ref_home)
    assert run(ref_cli)["status"] == "success"
    _more_data(ref_settings, gen, tmp_path / "extra-ref", 1)
    _more_data(ref_settings, gen, tmp_path / "extra-ref", 2)
    assert run(ref_cli)["status"] == "success"
    reference = store_state(ref_settings)
    assert crashed[1] == reference[1], "profiles differ from a home that never crashed"
    assert crashed[2] == reference[2], "recommendations differ from a home that never crashed"
    body = json.loads(crashed[1]["C0000003"])
    assert body["first_name"] == "Renamed2"
