"""One pipeline cycle: transform (dbt in-process), read changes, validate, publish; run log.

Write-audit-publish: dbt writes the warehouse, the changed rows are validated there, and only a
passing cycle publishes them to the online store in one transaction. A failed or killed cycle
publishes nothing; the next good cycle publishes everything written since the last publish
(`_cycle_id > <last published cycle id>`), so nothing is lost and nothing counted twice.

One cycle at a time per home: an flock on `run/cycle.lock`, released by the kernel when the
process dies, so a killed cycle never blocks the next.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import store
from pipeline.config import Settings
from pipeline.ids import iso_z, new_cycle_id, utcnow
from pipeline.locks import FileLock
from pipeline.logs import get_logger

log = get_logger("sendtime.cycle")

# Test hooks (documented in docs/pipeline.md; never set in production): with
# SENDTIME_TEST_HOOKS_DIR set, the cycle touches `<dir>/<point>` as it passes each point, and
# when SENDTIME_TEST_PAUSE_AT names a point it sleeps there, so a crash-safety test can kill it
# at a known place with `kill -9`.
HOOK_POINTS = ("transform_started", "transform_done", "validate_started", "publish_started", "publish_commit")
_ERROR_LIMIT = 2000


def _hook(point: str) -> None:
    folder = os.environ.get("SENDTIME_TEST_HOOKS_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / point).write_text(str(os.getpid()))
    if os.environ.get("SENDTIME_TEST_PAUSE_AT") == point:
        time.sleep(float(os.environ.get("SENDTIME_TEST_PAUSE_SECONDS", "3600")))


@dataclass
class CycleResult:
    cycle_id: str
    status: str  # success, failed, validation_failed, or busy (another cycle holds the lock)
    as_of: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    phases: dict[str, float] = field(default_factory=dict)
    rows_read: int = 0
    rows_changed: int = 0
    rows_published: int = 0
    rows_deleted: int = 0
    version: int | None = None
    validation: dict[str, Any] | None = None
    transform: dict[str, Any] | None = None
    erasure: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def seconds(self) -> float:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("as_of", "started_at", "ended_at"):
            out[key] = iso_z(out[key])
        out["ok"] = self.ok
        out["seconds"] = round(self.seconds, 3)
        out["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        return out

    def summary(self) -> str:
        if self.status == "busy":
            return f"cycle skipped: {self.error}"
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in self.phases.items())
        head = f"cycle {self.cycle_id}: {self.status} in {self.seconds:.2f}s ({phases})"
        counts = (
            f"\n  rows read {self.rows_read}, changed {self.rows_changed}, published {self.rows_published}, "
            f"deleted {self.rows_deleted}; "
        )
        counts += f"published version {self.version}" if self.version else "no new version published"
        text = head + counts
        if self.status == "validation_failed" and self.validation:
            failed = [
                f"  {suite}: {f['expectation']} on {f.get('column') or f.get('column_list') or (f.get('column_A'), f.get('column_B'))}"
                f": {f.get('unexpected_count')} rows"
                for suite, result in self.validation.items()
                for f in result.get("failed", [])
            ]
            text += "\n  validation failed; still serving the last published state:\n" + "\n".join(failed)
        if self.error:
            text += f"\n  error: {self.error}"
        return text


def _as_datetime(value: Any) -> datetime | None:
    """A pandas Timestamp (or NaT) of the change reader -> a naive datetime, or None."""
    if value is None or value != value:  # NaT
        return None
    return value.to_pydatetime() if hasattr(value, "to_pydatetime") else value


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]


def cycle_lock(settings: Settings) -> FileLock:
    return FileLock(settings.run_dir / "cycle.lock")


def run_cycle(
    settings: Settings,
    *,
    as_of: datetime | None = None,
    full_refresh: bool = False,
    refresh_associations: bool | None = None,
) -> CycleResult:
    """Run one cycle and record it in the run log; never raises for a failing cycle."""
    started = utcnow()
    cycle_id = new_cycle_id(started)
    as_of = _naive_utc(as_of) or started
    lock = cycle_lock(settings)
    if not lock.acquire():
        pid = lock.holder_pid()
        return CycleResult(
            cycle_id,
            "busy",
            as_of=as_of,
            started_at=started,
            ended_at=utcnow(),
            error=f"another cycle is running on this home ({'pid ' + str(pid) if pid else 'unknown pid'})",
        )
    try:
        return _run_locked(settings, cycle_id, started, as_of, full_refresh, refresh_associations)
    finally:
        lock.release()


def _run_locked(
    settings: Settings,
    cycle_id: str,
    started: datetime,
    as_of: datetime,
    full_refresh: bool,
    refresh_associations: bool | None,
) -> CycleResult:
    result = CycleResult(cycle_id, "running", as_of=as_of, started_at=started)
    engine = None
    logged = False
    try:
        engine = store.engine_for(settings)
        store.migrate(engine)
        closed = store.close_interrupted_runs(engine, started)
        if closed:
            log.warning("closed interrupted cycles", extra={"count": closed})
        store.start_run(engine, cycle_id, started, as_of)
        logged = True
        _phases(settings, engine, result, full_refresh, refresh_associations)
    except Exception as exc:  # noqa: BLE001 - a failing cycle is recorded and reported, never raised
        result.status = "failed"
        result.error = result.error or _error_text(exc)
    result.ended_at = utcnow()
    if logged:
        try:
            store.finish_run(
                engine,
                cycle_id,
                status=result.status,
                ended_at=result.ended_at,
                phases=result.phases,
                rows_read=result.rows_read,
                rows_changed=result.rows_changed,
                rows_published=result.rows_published,
                rows_deleted=result.rows_deleted,
                validation=result.validation,
                error=result.error,
            )
        except Exception as exc:  # noqa: BLE001 - the store went away mid-cycle: the next cycle closes the row
            result.error = (result.error + "; " if result.error else "") + "run log: " + _error_text(exc)
            if result.status == "success":
                result.status = "failed"
    if engine is not None:
        engine.dispose()
    level = log.info if result.ok else log.warning
    level(
        "cycle finished",
        extra={
            "cycle_id": cycle_id,
            "status": result.status,
            "seconds": round(result.seconds, 3),
            "phases": {k: round(v, 3) for k, v in result.phases.items()},
            "rows_changed": result.rows_changed,
            "rows_published": result.rows_published,
            "rows_deleted": result.rows_deleted,
            "version": result.version,
            "error": result.error,
        },
    )
    return result


def _phases(
    settings: Settings, engine: Any, result: CycleResult, full_refresh: bool, refresh_associations: bool | None
) -> None:
    from pipeline import publish, transform
    from pipeline.changes import read_changes
    from pipeline.warehouse import warehouse_for

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.phases[name] = result.phases.get(name, 0.0) + (now - clock)
        clock = now

    # erasure requests (sendtime forget, CRM deletes), the lake index, quarantine retention: before
    # dbt, so the build reads the lake as the erasure left it (pipeline/erasure.py)
    from pipeline import erasure

    erased = erasure.run_pending(settings, engine, result.cycle_id)
    result.erasure = (
        erased.to_dict() if erased.requests or erased.tombstones or erased.quarantine_files_expired else None
    )
    result.rows_deleted += erased.profiles_deleted
    lap("erase")

    # every lake file present now is read by this build: a safe "newest ingested" for the version
    newest_ingested = publish.lake_newest_ingested_at(settings.lake_dir)
    lap("ingest_watermark")

    _hook("transform_started")
    built = transform.build(
        settings,
        as_of=result.as_of,
        cycle_id=result.cycle_id,
        full_refresh=full_refresh,
        refresh_associations=refresh_associations,
    )
    lap("transform")
    result.transform = _transform_summary(built)
    if not built.ok:
        result.status = "failed"
        result.error = f"dbt build failed: {built.error}"[:_ERROR_LIMIT]
        return
    _hook("transform_done")
    warehouse = warehouse_for(settings)
    if built.skipped and _settled(settings, warehouse):
        # dbt did not run and every row the warehouse holds was published (or found unchanged) by a
        # successful cycle of this process: nothing to read, validate or publish
        result.status = "success"
        return

    full_refresh = built.full_refresh  # the transform rebuilds everything when the contract changed
    since = store.last_published_cycle_id(engine)
    changes = read_changes(warehouse, built.contracts, since, result.as_of, all_keys=full_refresh)
    result.rows_read, result.rows_changed = changes.rows_read, changes.rows_changed
    lap("read")

    _hook("validate_started")
    from pipeline.validate import validate_changes

    report = validate_changes(changes, result.as_of)
    result.validation = report.to_dict()
    lap("validate")
    if not report.success:
        result.status = "validation_failed"
        result.error = "validation failed: " + "; ".join(report.failures())[:_ERROR_LIMIT]
        return

    _hook("publish_started")
    published = publish.publish(
        engine,
        changes,
        cycle_id=result.cycle_id,
        as_of=result.as_of,
        newest_ingested_at=newest_ingested,
        force_version=full_refresh or erased.profiles_deleted > 0,
        before_commit=lambda: _hook("publish_commit"),
    )
    lap("publish")
    result.version = published.version
    result.rows_published = published.rows_published
    result.rows_deleted += published.profiles_deleted
    result.status = "success"
    # a CRM delete published now (its profile answers 404) is an erasure request: the next cycle
    # removes the customer's every trace
    if len(changes.erasures):
        erasure.request_crm_deletes(
            settings,
            zip(
                changes.erasures["customer_id"].tolist(),
                [_as_datetime(v) for v in changes.erasures["erased_at"].tolist()],
            ),
        )
    _SETTLED[str(settings.home)] = warehouse.fingerprint()


# per home: the warehouse's fingerprint when a successful cycle of this process last read, validated
# and published everything written after the last published cycle (None: unknown)
_SETTLED: dict[str, object] = {}


def _settled(settings: Settings, warehouse: Any) -> bool:
    stamp = warehouse.fingerprint()
    return stamp is not None and _SETTLED.get(str(settings.home)) == stamp


def _transform_summary(built: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("seconds", "full_refresh", "refreshed_associations", "rows"):
        if hasattr(built, key):
            out[key] = getattr(built, key)
    plan = getattr(built, "plan", None)
    if plan is not None:
        out["plan"] = plan.to_dict()
    nodes = getattr(built, "nodes", None)
    if nodes is not None:
        out["nodes"] = len(nodes) if hasattr(nodes, "__len__") else nodes
    return out
