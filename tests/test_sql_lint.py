"""Every model and macro is lint-clean under the project's .sqlfluff (dbt templater, DuckDB dialect)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sqlfluff_lint_is_clean(tmp_path: Path):
    # the dbt templater compiles the project against a scratch SENDTIME_HOME (no lake, empty warehouse)
    env = {
        **os.environ,
        "SENDTIME_HOME": str(tmp_path),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sqlfluff", "lint", "models", "macros", "analyses"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
