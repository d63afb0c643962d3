"""The real `sendtime` command, run as a user would: a separate process with its own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """`Cli(home)("run", "--json")`: `sendtime run --json` on that home; fails the test on a non-zero
    exit unless `check=False`."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, timeout: float = 600) -> None:
        self.home = home
        self.env = {**os.environ, "SENDTIME_HOME": str(home), **(env or {})}
        self.timeout = timeout

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"sendtime {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "--json").stdout)
