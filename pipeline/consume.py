"""`sendtime consume`: the command. One consumer per home (a flock under run/), in the foreground
until SIGTERM or Ctrl-C, then a flush, a commit and the per-topic totals.

The consumer itself lives in `pipeline/kafka/` (one module per job; its `__init__` tells the
exactly-once design in short, docs/kafka.md in full). The names below are re-exported for the
CLI, the tests and the benchmarks.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from pipeline.config import Settings
from pipeline.encryption import at_rest
from pipeline.kafka.config import ConsumeConfig, ConsumeError, check_topic_map, parse_topic_map
from pipeline.kafka.consumer import ConsumeSummary, StreamConsumer
from pipeline.kafka.messages import prepare
from pipeline.kafka.offsets import OffsetLedger, lake_offsets, recover
from pipeline.locks import FileLock
from pipeline.logs import get_logger

log = get_logger(__name__)


def consume_lock(settings: Settings) -> FileLock:
    return FileLock(settings.run_dir / "consume.lock")


def run_consume(
    settings: Settings, *, bootstrap_servers: str | None = None, topics: str | None = None
) -> ConsumeSummary:
    """Consume until SIGTERM or Ctrl-C, then flush and return (the CLI exits 0)."""
    config = ConsumeConfig.from_settings(settings, bootstrap_servers=bootstrap_servers, topics=topics)
    if at_rest(settings) is not None:
        # a batch's offsets live in its Parquet footer metadata, which DuckDB cannot read back from an
        # encrypted file: never a silent plaintext batch in an encrypted lake (docs/privacy.md)
        raise ConsumeError(
            "sendtime consume does not support encryption at rest (encryption_key_file) yet: "
            "load Kafka into an unencrypted home, or ingest files (docs/privacy.md)"
        )
    lock = consume_lock(settings)
    if not lock.acquire():
        pid = lock.holder_pid()
        raise ConsumeError(
            f"sendtime consume is already running on {settings.home} "
            f"({'pid ' + str(pid) if pid else 'another process'}); one per home"
        )
    consumer = StreamConsumer(settings, config)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        consumer.stopping = True
        if signals["count"] > 1:
            # a second signal: leave now; safe, since a killed consumer loses nothing (recovery at start)
            log.warning("stopping now; the buffered messages are read again at the next start")
            os._exit(0)
        log.info("stop requested; flushing what was read", extra={"signal": signum})

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        consumer.open()
        summary = consumer.run()
        log.info(
            "consumer stopped",
            extra={"seconds": summary.seconds, "topics": {t: vars(x) for t, x in summary.topics.items()}},
        )
        return summary
    except ConsumeError as exc:
        consumer.failure = str(exc)  # its state says why it stopped (status page, metrics)
        raise
    finally:
        try:
            consumer.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.release()


__all__ = [
    "ConsumeConfig",
    "ConsumeError",
    "OffsetLedger",
    "StreamConsumer",
    "check_topic_map",
    "consume_lock",
    "lake_offsets",
    "parse_topic_map",
    "prepare",
    "recover",
    "run_consume",
]
