"""Wake the continuous scheduler when a batch lands in the lake.

Every writer (`sendtime ingest`, the HTTP collector, `sendtime consume`) lands a batch by renaming
`.<batch-id>.parquet.tmp` to `<batch-id>.parquet` inside `lake/<table>/ingest_date=.../`
(pipeline/lake_writer.py), so a landed batch is a file moved to (or created with) a `.parquet` name
that does not start with a dot. watchdog watches the lake with the kernel's notifications (inotify
on Linux, with watches added for new partition folders and their contents reported), so a waiting
scheduler uses no CPU; on a file system without notifications watchdog falls back to polling.

A wake-up only says "look": the cycle lists the lake itself (pipeline/lake_files.py) and does
nothing when nothing new is there, so a spurious or duplicate wake-up costs one cheap check, and
the scheduler's own timeout covers a notification that never comes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pipeline.lake_files import PARTITION_PREFIX, is_lake_file
from pipeline.logs import get_logger

log = get_logger(__name__)


def _lands_a_batch(path: str | bytes, is_directory: bool) -> bool:
    name = os.path.basename(os.fsdecode(path))
    if is_directory:
        # a new partition: its first files may have landed before the watch on it was added
        return name.startswith(PARTITION_PREFIX)
    return is_lake_file(name)


class LakeWatch:
    """`wait(timeout)` returns when a batch landed since the last `clear()`, `wake()` was called
    (a stop), or the timeout passed."""

    def __init__(self, lake_dir: Path) -> None:
        self.lake_dir = Path(lake_dir)
        self._event = threading.Event()
        self._observer: Any = None

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # a file lands by a rename (moved), or is complete once written and closed; a
                # file merely created may still be half-written, a folder is ready when created
                kinds = {"created", "moved"} if event.is_directory else {"moved", "closed"}
                if event.event_type not in kinds:
                    return
                path = event.dest_path if event.event_type == "moved" else event.src_path
                if path and _lands_a_batch(path, event.is_directory):
                    watch._event.set()

        self.lake_dir.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.lake_dir), recursive=True)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching the lake for new batches", extra={"observer": type(self._observer).__name__})

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    def clear(self) -> None:
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        """True when woken (a batch landed, or wake()), False on timeout."""
        return self._event.wait(timeout)

    def __enter__(self) -> LakeWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
