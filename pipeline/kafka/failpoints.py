"""Kill points for the crash tests (tests/test_consume.py): never set in production."""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """`SENDTIME_FAILPOINT=<name>` kills the process (SIGKILL) at that point of a flush."""
    if os.environ.get("SENDTIME_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
