"""`sendtime serve`: gunicorn (production mode) running serving.app.create_app."""
from __future__ import annotations

import os
from typing import Any, Callable

from gunicorn.app.base import BaseApplication
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Settings
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


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Migrate the store once, then fork `workers` gunicorn workers; returns on SIGTERM/SIGINT."""
    settings = settings.replace(workers=max(int(workers), 1))  # the rate limiter splits by workers
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
    options["pidfile"] = str(settings.run_dir / "api.pid")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    metrics.prepare_multiprocess(settings)  # before forking: workers inherit the folder
    options["child_exit"] = metrics.child_exit
    os.environ.setdefault("SENDTIME_HOME", str(settings.home))

    def factory() -> Any:
        from serving.app import create_app

        return create_app(settings)

    log.info("serving", extra={"host": host, "port": port, "workers": settings.workers})
    StandaloneApplication(factory, options).run()
