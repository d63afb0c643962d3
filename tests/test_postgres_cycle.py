"""The whole cycle with SENDTIME_ONLINE_STORE_URL=postgresql+psycopg://... on a real PostgreSQL 15."""

from __future__ import annotations

import json

import pytest
from test_crash import kill_cycle_at
from test_cycle import AS_OF_ARG, LATER_TS_MS, customer_change, ingest_lines, load_sample, run, store_state

from pipeline.config import load_settings
from tests.helpers.cli import Cli
from tests.helpers.net import free_port

pytestmark = pytest.mark.postgres


def test_cycle_publishes_to_postgres_and_survives_a_kill_inside_the_transaction(home, tmp_path, pg_url):
    env = {"SENDTIME_ONLINE_STORE_URL": pg_url}
    settings = load_settings(home, environ=env)
    cli = Cli(home, env)
    load_sample(home, tmp_path / "gen")
    first = run(cli)
    assert first["status"] == "success", first
    published = store_state(settings)
    assert published[0]["version"] == 1 and len(published[1]) >= 50
    assert not (home / "online.sqlite").exists()  # everything went to PostgreSQL

    ingest_lines(
        settings,
        "customers",
        tmp_path / "more",
        "c.jsonl",
        [customer_change(tmp_path / "gen", "C0000001", LATER_TS_MS, first_name="Pg")],
    )
    # kill -9 while the publish transaction is open: PostgreSQL rolls it back
    kill_cycle_at(home, tmp_path / "hooks", "publish_commit", env=env)
    assert store_state(settings) == published
    second = run(cli)
    assert second["status"] == "success" and second["version"] == 2
    assert json.loads(store_state(settings)[1]["C0000001"])["first_name"] == "Pg"
    runs = json.loads(cli("runs", "--json").stdout)["runs"]
    assert [r["status"] for r in runs[:3]] == ["success", "failed", "success"]


def test_postgres_down_is_a_clear_failed_cycle(home):
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{free_port()}/nothing"
    proc = Cli(home, {"SENDTIME_ONLINE_STORE_URL": url})("run", "--as-of", AS_OF_ARG, "--json", check=False)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["status"] == "failed" and "OperationalError" in result["error"]
    assert "secret" not in proc.stdout + proc.stderr
