"""Who may call which endpoint."""
from __future__ import annotations

from typing import Callable


def requires(scope: str) -> Callable:
    """Marks a view as needing an API key with `scope` (admin satisfies every scope)."""
    def mark(view: Callable) -> Callable:
        view.sendtime_scope = scope  # read by the app's before_request hook
        return view
    return mark
