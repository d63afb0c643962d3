"""`sendtime serve`: gunicorn (production mode) running serving.app.create_app.

In transit (DESIGN.md "Privacy and access", docs/privacy.md "TLS"): with a certificate and its key
(`--certfile`/`--keyfile`, settings `tls_certfile`/`tls_keyfile`) the API speaks HTTPS only, TLS 1.2
or newer. Without them it binds loopback only, unless `allow_plain_http = true` says a TLS-terminating
proxy sits in front: keys, tokens and profiles never cross a network in clear text by default.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import ConfigError, Settings
from pipeline.logs import get_logger
from pipeline.store import engine_for, migrate
from serving import metrics
from serving.gunicorn_conf import gunicorn_options

log = get_logger(__name__)


class StandaloneApplication(BaseApplication):
    """Programmatic gunicorn: every worker builds its own app (no preload), so store connections
    are opened after the fork, never shared between processes."""

    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self) -> Any:
        return self.factory()


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, 0.0.0.0, :: or '' all reach beyond this machine


def _tls12_or_newer(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn's ssl_context hook: its default context (certificate, key), TLS 1.2 at least."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def transport(settings: Settings, host: str, certfile: Path | None, keyfile: Path | None) -> dict[str, Any]:
    """The gunicorn TLS options, after checking the certificate and key load; a ConfigError (exit 2,
    at start) for half a pair, an unloadable one, or a plain bind beyond loopback."""
    if (certfile is None) != (keyfile is None):
        raise ConfigError(
            "TLS needs both a certificate and its key: --certfile and --keyfile (settings tls_certfile, tls_keyfile)"
        )
    if certfile is not None and keyfile is not None:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile=str(certfile), keyfile=str(keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TLS certificate {certfile} / key {keyfile}: cannot load: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        return {"certfile": str(certfile), "keyfile": str(keyfile), "ssl_context": _tls12_or_newer}
    if not is_loopback(host) and not settings.allow_plain_http:
        raise ConfigError(
            f"refusing to serve plain HTTP on {host!r}, beyond this machine: give --certfile and "
            "--keyfile (HTTPS), or set allow_plain_http = true behind a TLS-terminating proxy "
            "(docs/privacy.md)"
        )
    return {}


def serve(
    settings: Settings, host: str, port: int, workers: int, certfile: Path | None = None, keyfile: Path | None = None
) -> None:
    """Migrate the store once, then fork `workers` gunicorn workers; returns on SIGTERM/SIGINT."""
    settings = settings.replace(workers=max(int(workers), 1))  # the rate limiter splits by workers
    tls = transport(settings, host, certfile or settings.tls_certfile, keyfile or settings.tls_keyfile)
    engine = engine_for(settings)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        # the store is down (a PostgreSQL primary being restarted): serve anyway, from the read
        # replica when there is one, else 503 until it is back (docs/recovery.md)
        log.warning("cannot migrate the online store; serving without", extra={"error_type": type(exc).__name__})
    finally:
        engine.dispose()
    options = gunicorn_options(host, port, settings.workers)
    options.update(tls)
    options["pidfile"] = str(settings.run_dir / "api.pid")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    metrics.prepare_multiprocess(settings)  # before forking: workers inherit the folder
    options["child_exit"] = metrics.child_exit
    os.environ.setdefault("SENDTIME_HOME", str(settings.home))

    def factory() -> Any:
        from serving.app import create_app

        return create_app(settings)

    log.info("serving", extra={"host": host, "port": port, "workers": settings.workers, "tls": bool(tls)})
    StandaloneApplication(factory, options).run()
