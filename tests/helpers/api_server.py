"""Test/bench helpers for the API: fill an online store the way publish does, start the real
server (`sendtime serve`, gunicorn) as a subprocess on a free port, and call it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import requests

from pipeline.changes import Changes, etag
from pipeline.config import Settings, load_settings
from pipeline.ids import iso_z, new_cycle_id, utcnow
from pipeline.mart_contract import PRODUCTS, PROFILES, Column, Contracts
from pipeline.publish import publish
from pipeline.store import engine_for, migrate
from tests.helpers.cli import ROOT

_CONTRACTS: Contracts = {}


def project_contracts() -> Contracts:
    """The served marts' contract of the project (dbt parse, once per process)."""
    if not _CONTRACTS:
        import tempfile

        from pipeline.transform import served_contracts

        with tempfile.TemporaryDirectory(prefix="sendtime-contracts-") as home:
            _CONTRACTS.update(served_contracts(load_settings(home, environ={})))
    return _CONTRACTS


def _default(column: Column) -> Any:
    if column.kind == "list":
        return []
    if column.not_null and column.accepted_values:
        return column.accepted_values[0]
    if column.not_null and column.kind in ("integer", "money", "number"):
        return {"money": Decimal("0"), "number": 0.0}.get(column.kind, 0)
    return None


def profile_row(customer_id: str, **values: Any) -> tuple:
    """A customer_profiles mart row (the contract's served columns, in order) with sensible defaults."""
    served = project_contracts()[PROFILES].served
    base = {c.name: _default(c) for c in served} | {"customer_id": customer_id} | values
    return tuple(base[c.name] for c in served)


def product_row(product_id: str, **values: Any) -> tuple:
    base: dict[str, Any] = {
        "product_id": product_id,
        "name": f"Product {product_id}",
        "category": "misc",
        "price": Decimal("10.00"),
        "currency": "USD",
        "url": f"https://shop.example/p/{product_id}",
        "image_url": f"https://shop.example/i/{product_id}.jpg",
        "in_stock": True,
    }
    served = project_contracts()[PRODUCTS].served
    base = {c.name: _default(c) for c in served} | base | values
    return tuple(base[c.name] for c in served)


def body_text(columns: Iterable[Column], row: tuple) -> str:
    """A store body in the contract's format (docs/architecture.md): the contract's order, money
    with its decimals, timestamps ISO-8601 UTC with Z, lists as [] (what publish writes)."""
    parts = []
    for column, value in zip(columns, row):
        if column.kind == "money":
            text = "null" if value is None else f"{Decimal(value):.{column.scale}f}"
        elif isinstance(value, datetime):
            text = '"' + iso_z(value) + '"'
        else:
            text = orjson.dumps(value).decode()
        parts.append(orjson.dumps(column.name).decode() + ":" + text)
    return "{" + ",".join(parts) + "}"


def publish_rows(
    settings: Settings,
    profiles: Iterable[tuple],
    products: Iterable[tuple] = (),
    recommendations: dict[str, list[tuple[str, float, str]]] | None = None,
    as_of: datetime | None = None,
) -> int:
    """One publish through pipeline.publish.publish (the real writer, one transaction, a new
    version row, the contract); bodies serialized in the contract's format. Returns the version."""
    contracts = project_contracts()
    served = contracts[PROFILES].served
    email_at = [c.name for c in served].index("email")
    changes = Changes(since=None, contracts=contracts)
    changes.profile_bodies = [
        (row[0], row[email_at], body, etag(body)) for row in profiles for body in [body_text(served, row)]
    ]
    changes.product_bodies = [(row[0], body_text(contracts[PRODUCTS].served, row)) for row in products]
    changes.recommendation_bodies = [
        (cid, orjson.dumps([{"product_id": p, "score": s, "reason": r} for p, s, r in items]).decode())
        for cid, items in sorted((recommendations or {}).items())
    ]
    engine = engine_for(settings)
    try:
        migrate(engine)
        result = publish(
            engine,
            changes,
            cycle_id=new_cycle_id(),
            as_of=as_of or utcnow(),
            newest_ingested_at=None,
            force_version=True,
        )
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

    def start(self, timeout: float = 30) -> ApiServer:
        from tests.helpers.net import free_port

        self.port = self.port or free_port()
        env = {**os.environ, "SENDTIME_HOME": str(self.home), **self.env}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
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

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _auth(key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    out = dict(headers or {})
    if key is not None:
        out["Authorization"] = f"Bearer {key}"
    return out


# -- the standard data set of the API tests ----------------------------------------------------

PEOPLE = {
    "c1": {"email": "ada.lovelace@example.com", "first_name": "Ada", "last_name": "Lovelace"},
    "c2": {"email": "grace.hopper@example.com", "first_name": "Grace", "last_name": "Hopper"},
}


def seed_store(settings: Settings) -> dict[str, str]:
    """Publishes c1 (a full profile), c2 (another person), c3 (nothing known: fallbacks) and a
    small catalog; creates one key per scope. Returns {scope or 'admin': key}."""
    from serving.keys import create_key

    publish_rows(
        settings,
        [
            profile_row(
                "c1",
                **PEOPLE["c1"],
                country="GB",
                locale="en-GB",
                timezone="Europe/London",
                marketing_consent=True,
                first_seen_at=datetime(2026, 1, 2, 3, 4, 5),
                last_seen_at=datetime(2026, 11, 1, 12, 0, 0, 250000),
                orders_count=3,
                lifetime_value=Decimal("1234.50"),
                last_order_at=datetime(2026, 10, 30, 9, 0),
                lifecycle_stage="active",
                recently_viewed=["P1", "P2"],
                cart=["P3"],
                top_categories=["books", "garden"],
                recommendations=["P1", "P2", "P4"],
            ),
            profile_row("c2", **PEOPLE["c2"], marketing_consent=False),
            profile_row("c3"),
        ],
        [
            product_row("P1", name="Analytical Engine Manual", price=Decimal("19.90"), category="books"),
            product_row("P2", name="Garden Shears", price=Decimal("7.00"), category="garden"),
            product_row("P3", name="Lamp"),
            product_row("P4", name="Seeds", price=Decimal("2.50"), category="garden"),
        ],
        {"c1": [("P1", 0.9, "association"), ("P2", 0.5, "association"), ("P4", 0.25, "popular_in_category")]},
    )
    keys = {}
    for scope in ("profiles:read", "events:write", "admin"):
        keys[scope], _ = create_key(settings, scope.replace(":", "-") + "-key", [scope])
    return keys
