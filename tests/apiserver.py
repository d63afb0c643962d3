"""Test/bench helpers for the API: fill an online store the way publish does, start the real
server (`sendtime serve`, gunicorn) as a subprocess on a free port, and call it over HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import requests

from pipeline.config import Settings
from pipeline.ids import new_cycle_id, utcnow
from pipeline.publish import PRODUCT_FIELDS, PROFILE_FIELDS, Changes, publish
from pipeline.store import engine_for, migrate

ROOT = Path(__file__).resolve().parents[1]


def profile_row(customer_id: str, **values: Any) -> tuple:
    """A customer_profiles mart row (PROFILE_FIELDS order) with sensible defaults."""
    base: dict[str, Any] = {
        "customer_id": customer_id, "email": None, "first_name": None, "last_name": None, "country": None,
        "locale": None, "timezone": None, "marketing_consent": None, "first_seen_at": None,
        "last_seen_at": None, "orders_count": 0, "lifetime_value": Decimal("0"), "last_order_at": None,
        "lifecycle_stage": "prospect", "recently_viewed": [], "cart": [], "top_categories": [],
        "recommendations": [],
    }
    base.update(values)
    return tuple(base[f] for f in PROFILE_FIELDS)


def product_row(product_id: str, **values: Any) -> tuple:
    base: dict[str, Any] = {"product_id": product_id, "name": f"Product {product_id}", "category": "misc",
                            "price": Decimal("10.00"), "currency": "USD",
                            "url": f"https://shop.example/p/{product_id}",
                            "image_url": f"https://shop.example/i/{product_id}.jpg", "in_stock": True}
    base.update(values)
    return tuple(base[f] for f in PRODUCT_FIELDS)


def publish_rows(settings: Settings, profiles: Iterable[tuple], products: Iterable[tuple] = (),
                 recommendations: dict[str, list[tuple[str, float, str]]] | None = None,
                 erase: Iterable[str] = (), as_of: datetime | None = None) -> int:
    """One publish through pipeline.publish (the real writer): returns the new version."""
    profiles = list(profiles)
    recommendations = recommendations or {}
    changes = Changes(since=None)
    changes.profiles = profiles
    changes.products = list(products)
    changes.recommendation_customers = sorted(recommendations)
    changes.recommendations = [(cid, rank, pid, score, reason)
                               for cid, items in sorted(recommendations.items())
                               for rank, (pid, score, reason) in enumerate(items, 1)]
    changes.erasures = [(cid, utcnow()) for cid in erase]
    engine = engine_for(settings)
    try:
        migrate(engine)
        result = publish(engine, changes, cycle_id=new_cycle_id(), as_of=as_of or utcnow(),
                         newest_ingested_at=None, force_version=True)
    finally:
        engine.dispose()
    return int(result.version)


@dataclass
class ApiServer:
    """`sendtime serve` in a subprocess; stderr (the JSON logs) captured to a file."""

    home: Path
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server-stderr.log"

    def start(self, timeout: float = 30) -> "ApiServer":
        from tests.conftest import free_port

        self.port = self.port or free_port()
        env = {**os.environ, "SENDTIME_HOME": str(self.home), **self.env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers)],
            cwd=ROOT, env=env, stdout=self._log, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # gunicorn's graceful stop of master + workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers=_auth(key, kwargs.pop("headers", None)), timeout=10, **kwargs)

    def post(self, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, headers=_auth(key, kwargs.pop("headers", None)), timeout=30, **kwargs)

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _auth(key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    out = dict(headers or {})
    if key is not None:
        out["Authorization"] = f"Bearer {key}"
    return out
