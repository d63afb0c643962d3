"""Shared fixtures: a fresh SENDTIME_HOME per test, the real CLI as a subprocess, a real PostgreSQL."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from tests.helpers.cli import Cli

# session fixtures of the Kafka stack (broker, Connect + Debezium, PostgreSQL shop): started on first use
pytest_plugins = ["tests.helpers.kafka_stack"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(home, environ={})


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Starts the machine's PostgreSQL 15 (as the issue and .ci/run require) and yields an admin DSN."""
    if shutil.which("pg_ctlcluster") is None and not Path("/usr/bin/pg_ctlcluster").exists():
        pytest.fail("PostgreSQL 15 is not installed (scripts/system-deps.sh installs it)")
    if not _pg_ready():
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=False, capture_output=True)
        for _ in range(60):
            if _pg_ready():
                break
            time.sleep(0.5)
    assert _pg_ready(), "PostgreSQL did not start"
    return "postgres"


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh database and role for one test; dropped afterwards."""
    name = "sendtime_test_" + secrets.token_hex(4)
    password = secrets.token_hex(8)

    def psql(sql: str) -> None:
        subprocess.run(
            ["su", "postgres", "-c", f"psql -v ON_ERROR_STOP=1 -q -c \"{sql}\""], check=True, capture_output=True
        )

    psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql(f"CREATE DATABASE {name} OWNER {name}")
    yield f"postgresql+psycopg://{name}:{password}@127.0.0.1:5432/{name}"
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture(scope="session")
def published_sample(tmp_path_factory) -> tuple[Path, Path]:
    """(home, generated files) of a sample home after one successful cycle, built once per session;
    tests copy it (tests/helpers/homes.py `copy_home`) instead of paying for a first cycle each."""
    from tests.helpers.homes import build_published_sample

    return build_published_sample(tmp_path_factory.mktemp("published-sample"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path: Path):
    """An online store migrated to the current schema, on SQLite and on PostgreSQL (one test each)."""
    from pipeline import store

    url = f"sqlite:///{tmp_path / 'online.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    eng = store.make_engine(url)
    store.migrate(eng)
    yield eng
    eng.dispose()
