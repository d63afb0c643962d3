"""The per-app state: what every request needs, built once per app (per worker) by the factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from pipeline.config import Settings, load_settings
from pipeline.store import api_engine
from serving.ratelimit import TokenBucketLimiter
from serving.reader import StoreReader


@dataclass
class ApiState:
    """What every request needs, built once per app (per worker): `app.extensions["sendtime"]`."""

    settings: Settings
    reader: StoreReader
    limiter: TokenBucketLimiter
    cache_control: str
    # failed authentications per client address (a key or a client secret that is not valid)
    auth_failures: TokenBucketLimiter | None = None


def state() -> ApiState:
    """The current app's ApiState (inside a request or app context)."""
    return current_app.extensions["sendtime"]


def writer_engine() -> Any:
    """The current app's SQLAlchemy engine for the few writes the API makes (the collector's claims,
    OAuth tokens): made once per worker, on first use (the reader itself never writes). The
    primary, never the read replica, every wait bounded by api_store_timeout (a 503, not a hang)."""
    engine = current_app.extensions.get("sendtime.writer")
    if engine is None:
        engine = current_app.extensions["sendtime.writer"] = api_engine(state().settings, read=False)
    return engine


def app_settings(app: Flask | None = None) -> Settings:
    """The settings of the app factory (`app.extensions["sendtime"].settings`), else the environment's."""
    app = app or current_app
    value = getattr(app.extensions.get("sendtime"), "settings", None)
    if isinstance(value, Settings):
        return value
    value = app.extensions.get("sendtime_settings")
    if not isinstance(value, Settings):
        value = app.extensions["sendtime_settings"] = load_settings()
    return value
