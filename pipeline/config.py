"""The one place that owns configuration.

Precedence, lowest first: built-in defaults < `$SENDTIME_HOME/sendtime.toml` < `SENDTIME_*`
environment variables. Every path of runtime state derives from `home`, so two homes never
share a file.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import SendtimeError

DEFAULT_HOME = ".sendtime"

# merge-field fallbacks come from the marts' YAML (`merge_fallback`); this setting overrides them
DEFAULT_MERGE_FALLBACKS: dict[str, str] = {}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(SendtimeError, ValueError):
    """A setting has a value that cannot be used."""


def parse_duration(text: str | int | float) -> float:
    """'5s', '5m', '1h', '250ms' or a bare number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(f"not a duration: {text!r} (use e.g. 5s, 5m, 1h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"a duration must be positive: {text!r}")
    return seconds


@dataclass(frozen=True)
class Settings:
    home: Path
    # online store: SQLite under home by default; postgresql+psycopg://... for several API nodes
    online_store_url: str = ""
    # pipeline
    schedule_every: str = "5m"
    recommendations_refresh_every: str = "1h"
    lake_overlap_seconds: float = 300.0
    # serving
    cache_max_age: int = 300
    rate_limit_per_second: float = 10_000.0
    rate_limit_burst: int = 20_000
    ready_max_age_seconds: float = 3600.0
    batch_max_ids: int = 1000
    collector_max_events: int = 1000
    collector_max_body_bytes: int = 5 * 1024 * 1024
    ip_allowlist: tuple[str, ...] = ()
    status_page_access: str = "key"  # "open" or "key" (admin scope)
    merge_field_fallbacks: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MERGE_FALLBACKS))
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    # -- derived paths: all runtime state lives below home --
    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dbt_target_dir(self) -> Path:
        return self.home / "dbt" / "target"

    @property
    def dbt_log_dir(self) -> Path:
        return self.home / "dbt" / "logs"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """Pid files and sockets of running processes (scheduler, server)."""
        return self.home / "run"

    @property
    def store_url(self) -> str:
        return self.online_store_url or f"sqlite:///{(self.home / 'online.sqlite').resolve()}"

    @property
    def schedule_seconds(self) -> float:
        return parse_duration(self.schedule_every)

    @property
    def recommendations_refresh_seconds(self) -> float:
        return parse_duration(self.recommendations_refresh_every)

    def env(self) -> dict[str, str]:
        """Environment that hands these settings to a child process (gunicorn, dbt)."""
        out = {"SENDTIME_HOME": str(self.home)}
        if self.online_store_url:
            out["SENDTIME_ONLINE_STORE_URL"] = self.online_store_url
        return out


def _coerce(name: str, current: Any, raw: Any) -> Any:
    """Turn a TOML or environment value into the type of the field's default."""
    try:
        if isinstance(current, bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            if isinstance(raw, (list, tuple)):
                return tuple(str(x).strip() for x in raw if str(x).strip())
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if isinstance(current, Mapping):
            if isinstance(raw, Mapping):
                return {**current, **{str(k): str(v) for k, v in raw.items()}}
            # env form: "first_name=there,locale=en"
            pairs = (p.split("=", 1) for p in str(raw).split(",") if "=" in p)
            return {**current, **{k.strip(): v.strip() for k, v in pairs}}
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {raw!r}: {exc}") from None


def load_settings(home: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    home_path = Path(home or environ.get("SENDTIME_HOME") or DEFAULT_HOME).expanduser().absolute()
    settings = Settings(home=home_path)
    overrides: dict[str, Any] = {}

    toml_path = home_path / "sendtime.toml"
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from None
        overrides.update(data.get("sendtime", data))

    for f in fields(Settings):
        if f.name == "home":
            continue
        env_name = f"SENDTIME_{f.name.upper()}"
        if env_name in environ:
            overrides[f.name] = environ[env_name]

    known = {f.name for f in fields(Settings)} - {"home"}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    coerced = {k: _coerce(k, getattr(settings, k), v) for k, v in overrides.items()}
    settings = replace(settings, **coerced)
    if settings.status_page_access not in {"open", "key"}:
        raise ConfigError("status_page_access must be 'open' or 'key'")
    parse_duration(settings.schedule_every)
    parse_duration(settings.recommendations_refresh_every)
    return settings


def ensure_home(settings: Settings) -> None:
    """Create the home's folders; a clear error when the home is not writable."""
    try:
        for path in (settings.home, settings.lake_dir, settings.quarantine_dir, settings.log_dir, settings.run_dir):
            path.mkdir(parents=True, exist_ok=True)
        probe = settings.home / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"SENDTIME_HOME {settings.home} is not writable: {exc.strerror or exc}") from None
