"""The consumer's settings: the topic map, the client passthrough and its protected options
(no broker needed)."""

from __future__ import annotations

import pytest

from pipeline.config import DEFAULT_KAFKA_TOPICS, load_settings
from pipeline.consume import (
    ConsumeConfig,
    ConsumeError,
    check_topic_map,
    parse_topic_map,
    prepare,
)


def test_defaults_follow_design(tmp_path) -> None:
    s = load_settings(tmp_path, environ={})
    assert dict(s.kafka_topics) == {
        "events": "sendtime.events",
        "customers": "shop.public.customers",
        "orders": "shop.public.orders",
        "order_items": "shop.public.order_items",
        "products": "sendtime.products",
    }
    assert (s.kafka_group_id, s.kafka_flush_seconds, s.kafka_flush_records) == ("sendtime", 1.0, 50_000)
    config = ConsumeConfig.from_settings(s)
    conf = config.client_config()
    assert conf["enable.auto.commit"] is False and conf["auto.offset.reset"] == "earliest"
    assert conf["isolation.level"] == "read_committed" and conf["group.id"] == "sendtime"
    assert conf["group.instance.id"].startswith("sendtime-")


def test_toml_env_and_command_line(tmp_path) -> None:
    (tmp_path / "sendtime.toml").write_text(
        'kafka_bootstrap_servers = "k1:9093"\n'
        '[kafka_topics]\nevents = "web.events"\nproducts = ""\n'
        '[kafka_client]\n"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "SCRAM-SHA-512"\n'
    )
    env = {
        "SENDTIME_KAFKA_CLIENT__SASL_PASSWORD": "secret",
        "SENDTIME_KAFKA_CLIENT__ssl.ca.location": "/ca.pem",
        "SENDTIME_KAFKA_FLUSH_RECORDS": "1000",
    }
    s = load_settings(tmp_path, environ=env)
    assert s.kafka_client == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.password": "secret",
        "ssl.ca.location": "/ca.pem",
    }
    config = ConsumeConfig.from_settings(s)
    assert config.bootstrap_servers == "k1:9093" and config.flush_records == 1000
    expected = {k: v for k, v in DEFAULT_KAFKA_TOPICS.items() if k != "products"} | {"events": "web.events"}
    assert config.topics == expected  # merged into the defaults; "" turns products off
    assert config.client_config()["sasl.password"] == "secret"
    cli = ConsumeConfig.from_settings(s, bootstrap_servers="k9:1", topics="orders=o.t")
    assert cli.bootstrap_servers == "k9:1" and cli.topics == {"orders": "o.t"}
    off = ConsumeConfig.from_settings(load_settings(tmp_path, environ={"SENDTIME_KAFKA_CLIENT__group.instance.id": ""}))
    assert "group.instance.id" not in off.client_config()


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ({"clicks": "x"}, "kafka topic map names unknown source 'clicks'"),
        ({"events": "t", "products": "t"}, "kafka topic 't' is mapped to two sources (events, products)"),
        ({"events": ""}, "kafka topic map is empty"),
    ],
)
def test_bad_topic_maps(topics, message) -> None:
    with pytest.raises(ConsumeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_topic_map(topics)


def test_parse_topic_map() -> None:
    assert parse_topic_map(" events = a.b ,customers=c") == {"events": "a.b", "customers": "c"}
    with pytest.raises(ConsumeError, match="expected SOURCE=TOPIC"):
        parse_topic_map("events")


@pytest.mark.parametrize(
    "option",
    [
        "enable.auto.commit",
        "auto.offset.reset",
        "group.id",
        "bootstrap.servers",
        "isolation.level",
        "enable.auto.offset.store",
    ],
)
def test_protected_options(tmp_path, option) -> None:
    s = load_settings(tmp_path, environ={f"SENDTIME_KAFKA_CLIENT__{option}": "x"})
    with pytest.raises(ConsumeError, match=f"kafka_client option '{option}' cannot be set"):
        ConsumeConfig.from_settings(s)


def test_prepare_classifies_values() -> None:
    wrapped = b'{"schema": {"type": "struct"}, "payload": {"op": "c"}}'
    p = prepare([b'{"a": 1}', None, b"\xff", wrapped, b'{"schema":{},"payload":null}', b"x" * (1024 * 1024 + 1)])
    assert p.skipped == 2
    assert p.lines.to_pylist() == [1, 4] and p.raw.to_pylist() == ['{"a": 1}', '{"op":"c"}']
    assert [(r["line"], r["reason"]) for r in p.rejected] == [
        (3, "invalid UTF-8"),
        (6, "message over 1 MiB (1048577 bytes)"),
    ]
