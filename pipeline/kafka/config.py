"""The consumer's configuration: the topic map (source -> topic), the group, the flush bounds, and
the librdkafka options passed through, minus the ones the exactly-once design owns."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Settings
from pipeline.contracts import CONTRACTS
from pipeline.errors import SendtimeError

# Client options the exactly-once design owns: a passthrough may not change them.
PROTECTED_CLIENT_OPTIONS = {
    "bootstrap.servers": "use kafka_bootstrap_servers or --bootstrap-servers",
    "group.id": "use kafka_group_id",
    "enable.auto.commit": "offsets are committed after the lake file is durable",
    "enable.auto.offset.store": "offsets are committed after the lake file is durable",
    "auto.offset.reset": "a partition the lake has not seen starts at its earliest offset",
    "isolation.level": "only committed transactional messages are read",
    "partition.assignment.strategy": "the rebalance callbacks assume the classic eager protocol",
    "group.protocol": "the rebalance callbacks assume the classic eager protocol",
}


class ConsumeError(SendtimeError):
    """The consumer cannot start (bad topic map, unreachable brokers, busy home): exit 2."""


def parse_topic_map(text: str) -> dict[str, str]:
    """'events=a,customers=b' -> {'events': 'a', 'customers': 'b'} (the --topics form)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConsumeError(f"--topics: expected SOURCE=TOPIC, got {part.strip()!r}")
        source, topic = part.split("=", 1)
        out[source.strip()] = topic.strip()
    if not out:
        raise ConsumeError("--topics: no SOURCE=TOPIC pair given")
    return out


def check_topic_map(topics: Mapping[str, str]) -> dict[str, str]:
    """Validated map of source -> topic. An empty topic disables a source (e.g. to drop a
    default in sendtime.toml); an unknown source or a topic named twice is an error."""
    unknown = sorted(s for s in topics if s not in CONTRACTS)
    if unknown:
        raise ConsumeError(
            f"kafka topic map names unknown source{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(s) for s in unknown)} (sources: {', '.join(CONTRACTS)})"
        )
    enabled = {s: t.strip() for s, t in topics.items() if t and t.strip()}
    seen: dict[str, str] = {}
    for source, topic in enabled.items():
        if topic in seen:
            raise ConsumeError(f"kafka topic {topic!r} is mapped to two sources ({seen[topic]}, {source})")
        seen[topic] = source
    if not enabled:
        raise ConsumeError("kafka topic map is empty: nothing to consume")
    return enabled


@dataclass(frozen=True)
class ConsumeConfig:
    bootstrap_servers: str
    topics: dict[str, str]  # source -> topic
    group_id: str
    flush_seconds: float
    flush_records: int
    client: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""  # static group membership (KIP-345); "" = dynamic

    @classmethod
    def from_settings(
        cls, settings: Settings, *, bootstrap_servers: str | None = None, topics: str | None = None
    ) -> ConsumeConfig:
        """Settings, then the command line (`--topics` replaces the whole map)."""
        topic_map = parse_topic_map(topics) if topics else dict(settings.kafka_topics)
        client = {str(k): str(v) for k, v in settings.kafka_client.items()}
        for key in client:
            if key in PROTECTED_CLIENT_OPTIONS:
                raise ConsumeError(f"kafka_client option {key!r} cannot be set: {PROTECTED_CLIENT_OPTIONS[key]}")
        # One consumer per home, so the home names a stable group member: a consumer restarted after
        # a crash takes its partitions back at once instead of waiting for the dead member's session
        # to time out (45 s by default). kafka_client `group.instance.id` overrides it; "" turns it off.
        instance_id = client.pop("group.instance.id", None)
        if instance_id is None:
            instance_id = default_instance_id(settings)
        return cls(
            bootstrap_servers=bootstrap_servers or settings.kafka_bootstrap_servers,
            topics=check_topic_map(topic_map),
            group_id=settings.kafka_group_id,
            flush_seconds=settings.kafka_flush_seconds,
            flush_records=settings.kafka_flush_records,
            client=client,
            instance_id=instance_id,
        )

    def client_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            # a topic created after the start (Debezium creates them on the first change) is found soon
            "topic.metadata.refresh.interval.ms": 10_000,
            **self.client,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "logger": logging.getLogger("librdkafka"),
        }
        if self.instance_id:
            conf["group.instance.id"] = self.instance_id
        return conf


def default_instance_id(settings: Settings) -> str:
    """`sendtime-<host>-<hash of the home>`: stable across restarts of one home's consumer."""
    digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:12]
    return f"sendtime-{socket.gethostname()}-{digest}"
