"""Test hooks at the collector's critical points (never set in production).

With `SENDTIME_TEST_HOOKS_DIR=<dir>` set, `test_hook(point)` touches `<dir>/<point>` (holding the
process id) as a process passes the point. A test arms a pause by creating `<dir>/pause-<point>`:
the first process to reach the point removes that file, writes its pid to `<dir>/paused-<point>`
and waits there until the test creates `<dir>/resume-<point>` (at most `SENDTIME_TEST_PAUSE_SECONDS`,
default 25: under gunicorn's 30 s worker timeout); every other process passes. So one request can be held in
flight while a concurrent one passes, or killed with SIGKILL at a known place, on a server that
keeps running. Points: `collector_landing`, `collector_landed`, `collector_recorded`
(serving/api/events.py). The cycle has its own hooks (pipeline/cycle.py, docs/pipeline.md).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def test_hook(point: str) -> None:
    folder = os.environ.get("SENDTIME_TEST_HOOKS_DIR")
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / point).write_text(str(os.getpid()))
    try:  # one process disarms the pause and takes it; the others pass
        (path / f"pause-{point}").unlink()
    except FileNotFoundError:
        return
    (path / f"paused-{point}").write_text(str(os.getpid()))
    resume = path / f"resume-{point}"
    deadline = time.monotonic() + float(os.environ.get("SENDTIME_TEST_PAUSE_SECONDS", "25"))
    while time.monotonic() < deadline:
        if resume.exists():
            resume.unlink()
            return
        time.sleep(0.02)


test_hook.__test__ = False  # not a pytest test, whatever imports it
