"""GET /status on a real `sendtime serve`: access modes, what the page shows, and what it never shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_metrics_store import KAFKA_TOPIC, SendtimeServer, seed_kafka, seed_store

from pipeline.config import load_settings
from serving.keys import create_key


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory):
    """A server with the default access ("key") and three keys."""
    home = tmp_path_factory.mktemp("status-key") / "home"
    home.mkdir()
    settings = load_settings(home, environ={})
    seed_store(settings, cycles=10)
    seed_kafka(settings)
    keys = {
        "admin": create_key(settings, "ops", ["admin"])[0],
        "reader": create_key(settings, "reader", ["profiles:read", "events:write"])[0],
    }
    revoked, _ = create_key(settings, "old-admin", ["admin"])
    from serving.keys import revoke_key

    revoke_key(settings, "old-admin")
    keys["revoked"] = revoked
    with SendtimeServer(home) as srv:
        yield srv, keys


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return response.json()


def test_key_mode_needs_an_admin_key_in_the_header(keyed) -> None:
    srv, keys = keyed
    body = _problem(srv.get("/status"), 401)
    assert body["type"].endswith("/unauthorized") and "Bearer" in body["detail"]
    assert srv.get("/status").headers["WWW-Authenticate"].startswith("Bearer")
    _problem(srv.get("/status", headers={"Authorization": "Bearer st_not-a-key"}), 401)
    _problem(srv.get("/status", headers={"Authorization": f"Bearer {keys['revoked']}"}), 401)
    body = _problem(srv.get("/status", headers={"Authorization": f"Bearer {keys['reader']}"}), 403)
    assert "admin" in body["detail"]
    # a key in the URL is refused: URLs end up in proxy logs and browser history
    _problem(srv.get("/status", params={"key": keys["admin"]}), 401)
    ok = srv.get("/status", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/html")
    assert ok.headers["Cache-Control"] == "no-store"


def test_page_content(keyed) -> None:
    srv, keys = keyed
    html = srv.get("/status", headers={"Authorization": f"Bearer {keys['admin']}"}).text
    assert re.search(r'id="card-version".*?>v\d+<', html, re.S)
    for section in (
        'id="card-freshness"',
        'id="chart-duration"',
        'id="chart-freshness"',
        'id="cycles"',
        'id="validation"',
        'id="quarantine"',
    ):
        assert section in html
    # ten cycles in the table, with their phases, row counts and validation results
    assert html.count('<tr>\n    <td><code>') == 10
    assert html.count("customer_profiles ✗") == 2  # the two cycles whose validation failed
    assert re.search(r'id="validation".*?<td>customer_profiles</td><td class="ok">passed</td>', html, re.S)
    assert ">1490<" in html and ">10<" in html  # events accepted and quarantined
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_kafka_consumer_section(keyed) -> None:
    srv, keys = keyed
    html = srv.get("/status", headers={"Authorization": f"Bearer {keys['admin']}"}).text
    consumer = re.search(r'<table id="kafka-consumers">.*?</table>', html, re.S).group(0)
    assert ">running<" in consumer and "sendtime-host-0123456789ab" in consumer and ">3 of 3<" in consumer
    assert "<code>_TRANSPORT</code> 4" in consumer and "ago" in consumer
    topics = re.search(r'<table id="kafka-topics">.*?</table>', html, re.S).group(0)
    # received 170 = accepted 159 + quarantined 3 + skipped 8; 4.0 records/s; lag 7 over two partitions
    row = re.search(rf"<code>{re.escape(KAFKA_TOPIC)}</code>.*?</tr>", topics, re.S).group(0)
    assert [int(n) for n in re.findall(r'class="num[^"]*">(\d+)<', row)][:5] == [3, 170, 159, 3, 8]
    assert ">4.0<" in row and ">7<" in row
    assert "<code>sendtime.events</code>" in topics  # consumed, no batch yet: listed with zeros
    assert 'id="kafka-partitions"' in html


def test_no_pii_on_the_page(keyed) -> None:
    srv, keys = keyed
    html = srv.get("/status", headers={"Authorization": f"Bearer {keys['admin']}"}).text
    # the seeded failed cycles carry an email address in their error: it is redacted
    assert "jane.doe@example.com" not in html and "[redacted]" in html
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", html)
    assert keys["admin"] not in html


def test_open_mode_and_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with SendtimeServer(home, workers=1, env={"SENDTIME_STATUS_PAGE_ACCESS": "open"}) as srv:
        response = srv.get("/status")
        assert response.status_code == 200
        assert "no cycle has published yet" in response.text
        assert "nothing published yet" in response.text and "no finished cycle yet" in response.text
        seed_store(load_settings(home, environ={}), cycles=3, fail_every=0, validation_fail_every=0)
        response = srv.get("/status")  # the next request sees the new state: no restart, no cache
        assert response.status_code == 200 and 'id="chart-duration"' in response.text
        assert 'id="kafka"' not in response.text  # no Kafka section on a home that never consumed
        # three cycles, each a stack of four phases plus the untimed rest of the cycle ("other")
        for phase in ("transform", "read", "validate", "publish", "other"):
            assert response.text.count(f"<title>{phase}: ") == 3, phase


def test_failed_expectations_show_names_and_counts_never_values() -> None:
    from serving.status import _failed_expectations

    result = {
        "success": False,
        "failed": [
            {
                "expectation": "expect_column_values_to_match_regex",
                "column": "email",
                "unexpected_count": 2,
                "partial_unexpected_list": ["bob@example.com", "x"],
            },
            {
                "expectation": "expect_column_pair_values_a_to_be_greater_than_b",
                "column_A": "last_seen_at",
                "column_B": "first_seen_at",
                "unexpected_count": 1,
            },
            "expect_table_row_count_to_be_between",
        ],
    }
    assert _failed_expectations(result) == [
        "expect_column_values_to_match_regex (email): 2 unexpected",
        "expect_column_pair_values_a_to_be_greater_than_b (last_seen_at, first_seen_at): 1 unexpected",
        "expect_table_row_count_to_be_between",
    ]
    assert _failed_expectations(None) == [] and _failed_expectations({"success": True}) == []


@pytest.mark.postgres
def test_status_and_metrics_on_a_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    """Several API nodes share a PostgreSQL store: the page and the pipeline metrics read it the same way."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"SENDTIME_ONLINE_STORE_URL": pg_url, "SENDTIME_STATUS_PAGE_ACCESS": "open"}
    seed_store(load_settings(home, environ={"SENDTIME_ONLINE_STORE_URL": pg_url}), cycles=5, lag_seconds=60)
    assert not (home / "online.sqlite").exists()
    with SendtimeServer(home, workers=1, env=env) as srv:
        html = srv.get("/status").text
        assert 'id="chart-duration"' in html and html.count('<tr>\n    <td><code>') == 5
        m = srv.metrics()
        assert m["sendtime_store_up"][()] == 1 and sum(m["sendtime_cycles_total"].values()) == 5
        assert 50 <= m["sendtime_freshness_lag_seconds"][()] <= 150
