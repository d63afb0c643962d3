"""Python is linted and formatted with ruff (pyproject.toml [tool.ruff]): the whole repository, so a
change that breaks either fails here, next to the SQL lint (tests/test_sql_lint.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.cli import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_finds_nothing():
    proc = _ruff("check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_every_file_is_formatted():
    proc = _ruff("format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
