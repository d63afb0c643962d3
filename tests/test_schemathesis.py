"""Schemathesis against the live server with the project's own OpenAPI document.

Bounded: a fixed seed, a few dozen examples per operation, one worker (schemathesis' coverage
phase is not thread-safe on Python 3.11). Every check runs: no 5xx, every response (status,
content type, headers, body) conforms to the document, invalid input is rejected, valid input is
accepted. A second run pins customer_id to a published customer so the handlers' 200 paths
(projections, recommendations, merge fields) are fuzzed too, not only 404s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings
from tests.helpers.api_server import ApiServer, seed_store

ST = Path(sys.executable).with_name("st")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("st-home")
    keys = seed_store(load_settings(home, environ={}))
    # schemathesis sends bad credentials on purpose: no failed-auth limit here (tests/test_hardening.py has one)
    with ApiServer(home, workers=2, env={"SENDTIME_AUTH_FAILURES_BURST": "1000000"}) as server:
        yield server, keys["admin"], home


def _run(server, key: str, workdir: Path, config: str = "") -> subprocess.CompletedProcess:
    args = [str(ST)]
    if config:
        path = workdir / "schemathesis.toml"
        path.write_text(config)
        args += ["--config-file", str(path)]
    args += [
        "run",
        server.url + "/openapi.json",
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--seed",
        "7",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "10",
    ]
    # the document's own string formats (a timestamp, a JSON array in a form field) need generators
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)


def test_schemathesis_finds_nothing(api, tmp_path):
    server, key, _ = api
    proc = _run(server, key, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "17 selected" in proc.stdout and "passed" in proc.stdout


def test_schemathesis_on_a_published_customer(api, tmp_path):
    server, key, _ = api
    proc = _run(server, key, tmp_path, config='[parameters]\ncustomer_id = "c1"\n')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    logs = server.logs()
    assert '"status":5' not in logs  # no 5xx in the server's request log either
    for route in ("<customer_id>", "<customer_id>/merge-fields", "<customer_id>/recommendations"):
        assert f'"route":"/api/v1/customers/{route}","status":200' in logs, route
