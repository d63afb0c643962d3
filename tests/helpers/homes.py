"""A published sample home, built once per session (conftest `published_sample`) and copied by the
tests that need one: a first cycle costs most of a minute on the shared machine, a copy a moment.

A copied home works like the original: its cycles rebuild the staging views over its own lake (a
new process always re-creates them), and everything else derives from SENDTIME_HOME.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers.cli import Cli
from tests.test_cycle import AS_OF_ARG, load_sample

# what a copy leaves behind: locks and pid files, logs
_TRANSIENT = ("run", "logs", "server-stderr.log")


def build_published_sample(root: Path) -> tuple[Path, Path]:
    home, gen = root / "home", root / "gen"
    home.mkdir()
    load_sample(home, gen)
    result = json.loads(Cli(home)("run", "--as-of", AS_OF_ARG, "--json").stdout)
    assert result["status"] == "success", result
    return home, gen


def copy_home(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*_TRANSIENT))
    return target
