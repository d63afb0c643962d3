"""`sendtime schedule`: pipeline cycles on an interval, or continuously, forever, surviving every failure.

With an interval (`--every 5m`): APScheduler 3.x BlockingScheduler with one interval job:
`max_instances=1` and `coalesce=True` (a slow cycle never overlaps the next, missed runs collapse
into one), a misfire grace of one interval, one worker thread. The first cycle runs at once; a cycle
that outlasts the interval is followed at once by the next (the interval is the minimum time
between cycle starts).

Continuously (`--every 0s`): the next cycle starts as soon as the previous one ends if a batch
landed meanwhile; otherwise the scheduler waits, without polling, for the lake to receive a batch
(pipeline/lake_watch.py), for the next instant at which a stored profile changes lifecycle stage,
or for `IDLE_RECHECK_SECONDS`, whichever comes first. A cycle that finds nothing to do does not
start dbt (pipeline/cycle_plan.py), so a spurious wake-up costs a few milliseconds.

- A failing cycle (dbt error, failed validation, disk full, PostgreSQL down) is logged and retried
  after a backoff that doubles per consecutive failure (interval x 2^n, capped; 1 s x 2^n when
  continuous), reset by a success. Nothing a cycle raises reaches the scheduler.
- SIGTERM or Ctrl-C: no new cycle starts; a running cycle may finish (up to `STOP_GRACE_SECONDS`)
  and the process exits 0. A second signal abandons it at once, which is safe: a cycle is
  crash-safe at every point (docs/pipeline.md).
- One scheduler per home: an flock on `run/scheduler.lock` (released by the kernel if the process
  dies). The scheduler is its own process, never inside gunicorn, so exactly one runs however
  many API workers there are.
- Great Expectations (~3 s to import) is imported in a thread when the scheduler starts, so the
  first cycle with changed rows does not wait for it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.clock import utcnow
from pipeline.config import Settings, parse_duration
from pipeline.errors import SendtimeError
from pipeline.lake_watch import LakeWatch
from pipeline.locks import FileLock
from pipeline.logs import get_logger

log = get_logger("sendtime.scheduler")

BACKOFF_CAP_SECONDS = 15 * 60
STOP_GRACE_SECONDS = 120.0
# continuous mode: the longest wait without a cycle (a safety net for a lost notification, and
# the time-driven work of a cycle; a cycle with nothing to do costs milliseconds)
IDLE_RECHECK_SECONDS = 60.0
# continuous mode: the backoff's base (an interval of 0 would never back off)
CONTINUOUS_BACKOFF_BASE = 1.0


class SchedulerBusy(SendtimeError):
    """Another `sendtime schedule` already runs on this home."""


def backoff_seconds(interval: float, failures: int, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Delay before the next try after `failures` consecutive failed cycles (0 after a success)."""
    if failures <= 0:
        return 0.0
    return min(interval * (2**failures), max(cap, interval))


@dataclass
class CycleRunner:
    """The job: one cycle per tick, with backoff; never raises into APScheduler."""

    settings: Settings
    interval: float
    failures: int = 0
    not_before: float = 0.0
    cycles: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)
    reconcile_at: float = 0.0  # monotonic time of the next reconcile in continuous mode (0: not yet set)

    def __post_init__(self) -> None:
        self.idle.set()

    def tick(self) -> None:
        # A cycle slower than the interval makes APScheduler skip the tick that fell inside it
        # (max_instances=1); rather than idle until the next one, run again at once: cycles then
        # follow each other back to back and freshness is one cycle, not two intervals.
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < self.not_before:
                log.info(
                    "backing off after failed cycles",
                    extra={"failures": self.failures, "retry_in_seconds": round(self.not_before - now, 1)},
                )
                return
            self.idle.clear()
            try:
                self._run_one()
            finally:
                self.idle.set()
                gc.collect()  # a long-lived process: return each cycle's frames and results promptly
            if self.failures or time.monotonic() - now < self.interval:
                return

    def _run_one(self) -> str:
        from pipeline.cycle import run_cycle

        try:
            result = run_cycle(self.settings)
            status, error = result.status, result.error
        except Exception as exc:  # noqa: BLE001 - run_cycle records its own failures; this is the last guard
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        self.cycles += 1
        if status == "busy":
            log.info("cycle skipped: another cycle is running on this home")
            return status
        if status == "success":
            if self.failures:
                log.info("cycle succeeded again", extra={"after_failures": self.failures})
            self.failures, self.not_before = 0, 0.0
            return status
        self.failures += 1
        delay = backoff_seconds(self.interval or CONTINUOUS_BACKOFF_BASE, self.failures)
        self.not_before = time.monotonic() + delay
        log.warning(
            "cycle failed; retrying after backoff",
            extra={"status": status, "failures": self.failures, "retry_in_seconds": delay, "error": error},
        )
        return status

    def run_continuously(self, watch: LakeWatch) -> None:
        """Cycles back to back while batches arrive, waiting on `watch` in between (continuous mode)."""
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < self.not_before:
                log.info(
                    "backing off after failed cycles",
                    extra={"failures": self.failures, "retry_in_seconds": round(self.not_before - now, 1)},
                )
                self.stopping.wait(self.not_before - now)
                continue
            watch.clear()  # a batch landing from now on wakes the next cycle
            self.idle.clear()
            try:
                status = self._run_one()
            finally:
                self.idle.set()
                gc.collect()
            self._reconcile_if_due()
            if self.stopping.is_set() or self.failures:
                continue
            wait = 1.0 if status == "busy" else self.idle_timeout()
            watch.wait(min(wait, max(self.reconcile_at - time.monotonic(), 0.0)))
            self._reconcile_if_due()

    def _reconcile_if_due(self) -> None:
        """Continuous mode's reconcile job: between two cycles, in the cycles' thread, every
        `reconcile_every` (the interval mode gives the same job to APScheduler)."""
        if self.reconcile_at == 0.0:
            self.reconcile_at = time.monotonic() + self.settings.reconcile_seconds
        if time.monotonic() < self.reconcile_at or self.stopping.is_set():
            return
        from pipeline.reconcile import ReconcileRunner

        ReconcileRunner(self.settings).tick()
        self.reconcile_at = time.monotonic() + self.settings.reconcile_seconds

    def idle_timeout(self) -> float:
        """How long a continuous scheduler may wait for a batch: until the next lifecycle stage
        change of a stored profile (a cycle then re-stages it), at most IDLE_RECHECK_SECONDS."""
        from pipeline.transform import cycle_state

        timeout = IDLE_RECHECK_SECONDS
        try:
            state = cycle_state(self.settings)
        except Exception:  # noqa: BLE001 - unknown state: the safety net's timeout
            state = None
        if state is not None and state.next_stage_change_at is not None:
            # the stage moves once as_of (the cycle's start) is past the boundary
            until = (state.next_stage_change_at - utcnow()).total_seconds() + 0.001
            timeout = min(timeout, max(until, 0.0))
        return timeout


def _skip_notices(record: logging.LogRecord) -> bool:
    """Drop APScheduler's warning for a tick that fell inside a running cycle: expected, and
    CycleRunner.tick runs the next cycle at once instead."""
    return "maximum number of running instances reached" not in record.getMessage()


def _add_reconcile_job(scheduler: Any, settings: Settings) -> None:
    """`sendtime reconcile` every `reconcile_every` (first after one interval), in the same single
    worker thread as the cycles, so it always runs between two cycles (docs/recovery.md)."""
    from apscheduler.triggers.interval import IntervalTrigger

    from pipeline.reconcile import ReconcileRunner

    every = settings.reconcile_seconds
    scheduler.add_job(
        ReconcileRunner(settings).tick,
        IntervalTrigger(seconds=every, timezone=UTC),
        id="reconcile",
        name="reconcile",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )


def scheduler_lock(settings: Settings) -> FileLock:
    return FileLock(settings.run_dir / "scheduler.lock")


def run_scheduler(settings: Settings, every: str, *, stop_grace: float = STOP_GRACE_SECONDS) -> None:
    """Run cycles every `every` (e.g. '5m', '5s'; '0s': continuously) until SIGTERM or Ctrl-C;
    returns normally (exit 0)."""
    interval = parse_duration(every, allow_zero=True)
    lock = scheduler_lock(settings)
    if not lock.acquire():
        pid = lock.holder_pid()
        raise SchedulerBusy(
            f"a scheduler is already running on {settings.home} "
            f"({'pid ' + str(pid) if pid else 'another process'}); one per home"
        )
    runner = CycleRunner(settings, interval)
    stop_hooks: list[Any] = []
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        runner.stopping.set()
        if signals["count"] > 1:
            # second signal: abandon the running cycle; safe because a killed cycle leaves the
            # store at its last published state and no lock behind (flock dies with the process)
            log.warning("stopping now; the running cycle is abandoned", extra={"signal": signum})
            os._exit(0)
        log.info("stop requested; no new cycle will start", extra={"signal": signum})
        for hook in stop_hooks:
            hook()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "scheduler started",
        extra={"every_seconds": interval, "continuous": interval == 0, "home": str(settings.home), "pid": os.getpid()},
    )
    # not a daemon: the interpreter waits for it at exit instead of freezing it mid-import, which
    # could leave an import lock held while the main thread shuts down (a hang on an early stop)
    threading.Thread(target=_warm_up, name="warm-up", daemon=False).start()
    try:
        if interval == 0:
            _run_continuous(settings, runner, stop_hooks)
        else:
            _run_on_interval(runner, interval, stop_hooks)
        if not runner.idle.is_set():
            log.info("waiting for the running cycle to finish", extra={"grace_seconds": stop_grace})
            if not runner.idle.wait(stop_grace):
                log.warning("the running cycle did not finish in time; abandoning it")
                os._exit(0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()
    log.info("scheduler stopped", extra={"cycles": runner.cycles})


def _warm_up() -> None:
    try:
        from pipeline.validate import warm_up

        warm_up()
    except Exception as exc:  # noqa: BLE001 - the first validation imports it again and reports
        log.warning("could not import Great Expectations ahead of the first cycle", extra={"error": type(exc).__name__})


def _run_on_interval(runner: CycleRunner, interval: float, stop_hooks: list[Any]) -> None:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = BlockingScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": max(1, int(interval))},
    )

    def job() -> None:
        if runner.stopping.is_set():  # a stop that came before the scheduler was running
            scheduler.shutdown(wait=False)
            return
        runner.tick()

    scheduler.add_job(
        job,
        IntervalTrigger(seconds=interval, timezone=UTC),
        id="cycle",
        name="pipeline cycle",
        next_run_time=datetime.now(UTC),
    )
    _add_reconcile_job(scheduler, runner.settings)
    stop_hooks.append(lambda: scheduler.shutdown(wait=False) if scheduler.running else None)
    logging.getLogger("apscheduler.scheduler").addFilter(_skip_notices)
    if not runner.stopping.is_set():
        scheduler.start()  # blocks until shutdown


def _run_continuous(settings: Settings, runner: CycleRunner, stop_hooks: list[Any]) -> None:
    with LakeWatch(settings.lake_dir) as watch:
        stop_hooks.append(watch.wake)
        worker = threading.Thread(target=runner.run_continuously, args=(watch,), name="cycles", daemon=True)
        worker.start()
        # the main thread only waits for a signal (a lock wait is interrupted by signal handlers)
        while worker.is_alive() and not runner.stopping.wait(IDLE_RECHECK_SECONDS):
            pass
