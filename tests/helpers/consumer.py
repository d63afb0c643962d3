"""`sendtime consume` as a real subprocess, and readers of what it wrote (lake rows, quarantine,
offset ranges), for the Kafka tests and the benchmark."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import duckdb

from tests.helpers.cli import ROOT


@dataclass
class ConsumerProcess:
    """One `sendtime consume` in its own process group; stderr (JSON logs) to a file in the home."""

    home: Path
    bootstrap: str
    topics: str | None = None  # SOURCE=TOPIC,...; None: the settings' map
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log_start: int = 0
    running: ClassVar[set[ConsumerProcess]] = set()  # kill_all() ends what a failed test left

    def __hash__(self) -> int:
        return id(self)

    @classmethod
    def kill_all(cls) -> None:
        for consumer in list(cls.running):
            consumer.kill()

    @property
    def log_path(self) -> Path:
        return self.home / "consume-stderr.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pipeline.cli", "consume", "--bootstrap-servers", self.bootstrap]
        return cmd + (["--topics", self.topics] if self.topics else [])

    def start(self, **env: str) -> ConsumerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        # a group per home: a consumer of another test, killed and gone, must not hold up this one's
        # rebalance until its session times out
        group = "test-" + hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        full = {
            **os.environ,
            "SENDTIME_HOME": str(self.home),
            "SENDTIME_KAFKA_FLUSH_SECONDS": "0.5",
            "SENDTIME_KAFKA_GROUP_ID": group,
            **self.env,
            **env,
        }
        self._log = open(self.log_path, "ab")
        self._log_start = self._log.tell()  # the home's log file may hold earlier runs
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=full, stdout=self._log, stderr=self._log, start_new_session=True
        )
        self.starts += 1
        ConsumerProcess.running.add(self)
        return self

    def wait_started(self, timeout: float = 60, mark: str = '"partitions assigned"') -> None:
        """Until this run logged `mark` (default: its partition assignment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"consume exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if mark in self.logs()[self._log_start :]:
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"consume did not start:\n{self.logs()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: flush and exit; returns the exit code. Waits until the signal handler is in
        place (it is before the lake's offsets are read), as an operator's stop would find it."""
        assert self.proc is not None
        self.wait_started(mark='"lake offsets read"')
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """kill -9 of the whole process group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self._log.close()
        ConsumerProcess.running.discard(self)

    def wait_exit(self, timeout: float = 60) -> int:
        """The exit code; a process still running after `timeout` is killed (never left behind)
        and the test fails."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"consume did not exit within {timeout:.0f}s:\n{self.logs()[-3000:]}") from None
        self._log.close()
        return code

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def lake_batches(home: Path, source: str) -> list[dict[str, Any]]:
    """The `sendtime.kafka` records of a source's lake files."""
    from pipeline.config import load_settings
    from pipeline.consume import lake_offsets

    return lake_offsets(load_settings(home, environ={}), [source])


def consumer_states(home: Path) -> list[Any]:
    """The consumers' reports in the home's online store (pipeline/kafka/state.py), newest first."""
    from pipeline.config import load_settings
    from pipeline.kafka.state import read_states
    from pipeline.store import engine_for

    engine = engine_for(load_settings(home, environ={}))
    try:
        with engine.connect() as conn:
            return read_states(conn)
    finally:
        engine.dispose()


def wait_for_state(home: Path, check: Callable[[Any], bool], what: str, timeout: float = 30) -> Any:
    """Until the newest consumer report satisfies `check`; returns it."""
    deadline = time.monotonic() + timeout
    states: list[Any] = []
    while time.monotonic() < deadline:
        try:
            states = consumer_states(home)
        except Exception:  # noqa: BLE001 - the store or its table is not there yet
            states = []
        if states and check(states[0]):
            return states[0]
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last report: {states[:1]}")


def lake_message_counts(home: Path, source: str, topic: str) -> Counter:
    """(partition, offset) -> number of lake rows holding that message."""
    files = list((home / "lake" / source).glob("ingest_date=*/*.parquet"))
    if not files:
        return Counter()
    con = duckdb.connect()
    try:
        rows = con.execute(
            "select _source_file from read_parquet($files, union_by_name = true) where _source_file like $prefix",
            {"files": [str(f) for f in files], "prefix": f"kafka:{topic}:%"},
        ).fetchall()
    finally:
        con.close()
    out: Counter = Counter()
    for (name,) in rows:
        partition, offset = name.rsplit(":", 2)[1:]
        out[(int(partition), int(offset))] += 1
    return out


def quarantine_entries(home: Path, source: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((home / "quarantine" / source).glob("ingest_date=*/*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def covered_offsets(home: Path, source: str, topic: str) -> Counter:
    """(partition, offset) -> number of lake batches whose recorded range covers it."""
    out: Counter = Counter()
    for batch in lake_batches(home, source):
        if batch["topic"] != topic:
            continue
        for p, (first, last) in batch["partitions"].items():
            for offset in range(first, last + 1):
                out[(int(p), offset)] += 1
    return out


def wait_for_offsets(
    home: Path,
    source: str,
    topic: str,
    ends: dict[int, int],
    timeout: float = 120,
    consumer: ConsumerProcess | None = None,
) -> None:
    """Until the lake's ranges cover every offset below `ends` (partition -> high watermark)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer is not None and consumer.proc is not None and consumer.proc.poll() is not None:
            raise AssertionError(f"consume exited {consumer.proc.returncode}:\n{consumer.logs()[-3000:]}")
        covered = covered_offsets(home, source, topic)
        if all((p, o) in covered for p, end in ends.items() for o in range(end)):
            return
        time.sleep(0.2)
    raise AssertionError(f"the lake did not reach {ends} for {topic}")
