"""The run log (`runs` table): `sendtime runs` lists the latest cycles."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline import store
from pipeline.config import Settings

_PHASES = ("transform", "read", "validate", "publish")


def list_runs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The latest cycles, newest first (an empty list before the first cycle)."""
    engine = store.engine_for(settings)
    try:
        if not store.has_schema(engine):
            return []
        return store.recent_runs(engine, limit=limit)
    finally:
        engine.dispose()


def _seconds(row: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(row["started_at"].rstrip("Z"))
        end = datetime.fromisoformat(row["ended_at"].rstrip("Z"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return "-"
    return f"{(end - start).total_seconds():.2f}s"


def _failed_expectations(row: dict[str, Any]) -> str:
    parts = []
    for suite, result in (row.get("validation") or {}).items():
        for failure in result.get("failed", []):
            column = failure.get("column") or ",".join(failure.get("column_list", [])) or \
                ",".join(str(failure[k]) for k in ("column_A", "column_B") if k in failure)
            parts.append(f"{suite}.{column}: {failure.get('expectation')} ({failure.get('unexpected_count')} rows)")
    return "; ".join(parts)


def format_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no cycles yet (run `sendtime run` or `sendtime schedule`)"
    header = (f"{'cycle_id':34} {'status':17} {'started_at':28} {'took':>8} "
              + " ".join(f"{p:>9}" for p in _PHASES) + f" {'changed':>8} {'published':>9} {'deleted':>7}")
    lines = [header]
    for row in rows:
        phases = row.get("phases") or {}
        lines.append(
            f"{row['cycle_id']:34} {row['status']:17} {row['started_at']:28} {_seconds(row):>8} "
            + " ".join(f"{phases[p]:>8.2f}s" if p in phases else f"{'-':>9}" for p in _PHASES)
            + f" {row.get('rows_changed') if row.get('rows_changed') is not None else '-':>8}"
            + f" {row.get('rows_published') if row.get('rows_published') is not None else '-':>9}"
            + f" {row.get('rows_deleted') if row.get('rows_deleted') is not None else '-':>7}"
        )
        detail = _failed_expectations(row) if row["status"] == "validation_failed" else row.get("error")
        if detail:
            lines.append(f"    {detail[:300]}")
    return "\n".join(lines)
