"""/metrics on a real `sendtime serve` (gunicorn, 2 workers): request counts are merged over the
workers (multiprocess mode), labels carry route templates, and pipeline metrics come from the store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from test_metrics_store import SendtimeServer, seeded_home


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with SendtimeServer(seeded_home(tmp_path_factory, "metrics", cycles=8, lag_seconds=120), workers=2) as srv:
        yield srv


def _hit(url: str) -> int:
    with requests.Session() as session:  # one connection per thread: several workers get work
        return sum(session.get(url, timeout=10).status_code == 200 for _ in range(25))


def test_request_counts_are_merged_over_workers(server: SendtimeServer) -> None:
    before = server.metrics().get("sendtime_http_requests_total", {})
    key = (("method", "GET"), ("route", "/health"), ("status", "200"))
    with ThreadPoolExecutor(8) as pool:
        ok = sum(pool.map(_hit, [server.url + "/health"] * 8))
    assert ok == 200
    after = server.metrics()
    # exact, whichever worker answered each request and whichever answers the scrape
    assert after["sendtime_http_requests_total"][key] - before.get(key, 0) == 200
    assert after["sendtime_http_request_duration_seconds_count"][key] - before.get(key, 0) >= 200
    # both workers served and wrote their own files in the run folder's multiprocess directory
    files = list((server.home / "run" / "prometheus").glob("counter_*.db"))
    assert len(files) >= 2, files


def test_route_templates_not_urls_and_statuses(server: SendtimeServer) -> None:
    assert server.get("/api/v1/customers/secret-id-123").status_code == 401
    assert server.get("/no/such/path").status_code == 404
    text = server.get("/metrics").text
    assert 'route="/api/v1/customers/<customer_id>",status="401"' in text
    assert 'route="unmatched",status="404"' in text
    assert "secret-id-123" not in text and "/no/such/path" not in text


def test_pipeline_metrics_from_the_store(server: SendtimeServer) -> None:
    m = server.metrics()
    assert m["sendtime_store_up"][()] == 1
    assert sum(m["sendtime_cycles_total"].values()) == 8
    assert 110 <= m["sendtime_freshness_lag_seconds"][()] <= 200
    assert m["sendtime_rows_quarantined_total"][(("source", "events"),)] == 10
    assert m["sendtime_last_success_timestamp_seconds"][()] > 0
    assert set(m["sendtime_last_cycle_phase_seconds"]) >= {(("phase", "transform"),)}
    assert server.get("/metrics").headers["Content-Type"].startswith("text/plain")


def test_restart_starts_from_a_clean_multiprocess_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    stale = home / "run" / "prometheus"
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"\0" * 16)  # a previous run's (or a crashed worker's) file
    with SendtimeServer(home, workers=1) as srv:
        assert srv.get("/health").status_code == 200
        m = srv.metrics()
        assert not (stale / "counter_999999.db").exists()
        assert m["sendtime_http_requests_total"][(("method", "GET"), ("route", "/health"), ("status", "200"))] >= 1
        assert m["sendtime_published_version"][()] == 0  # migrated, empty store: no version yet


def test_a_dead_workers_counts_are_kept(tmp_path: Path) -> None:
    """gunicorn replaces a killed worker; the requests it served stay in the merged totals."""
    import os
    import signal
    import time

    from test_demo import descendants

    home = tmp_path / "home"
    home.mkdir()
    key = (("method", "GET"), ("route", "/health"), ("status", "200"))
    with SendtimeServer(home, workers=2) as srv:
        with ThreadPoolExecutor(4) as pool:
            assert sum(pool.map(_hit, [srv.url + "/health"] * 4)) == 100
        before = srv.metrics()["sendtime_http_requests_total"][key]
        workers = descendants(srv.proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        served = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # gunicorn forks two new workers
            if len(descendants(srv.proc.pid) - workers) == 2:
                try:
                    if srv.get("/health").status_code == 200:
                        served += 1
                        break
                except requests.ConnectionError:
                    pass
            time.sleep(0.2)
        assert served == 1
        after = srv.metrics()["sendtime_http_requests_total"][key]
        assert after == before + served  # the dead workers' counts are kept, nothing counted twice


def test_ip_allowlist_closes_metrics_and_status_but_not_probes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"SENDTIME_IP_ALLOWLIST": "10.0.0.0/8", "SENDTIME_STATUS_PAGE_ACCESS": "open"}
    with SendtimeServer(home, workers=1, env=env) as srv:  # the test connects from 127.0.0.1
        for path in ("/metrics", "/status"):
            response = srv.get(path)
            assert response.status_code == 403 and response.json()["type"].endswith("/ip-not-allowed"), path
        assert srv.get("/health").status_code == 200
