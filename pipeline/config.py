"""The one place that owns configuration.

Precedence, lowest first: built-in defaults < `$SENDTIME_HOME/sendtime.toml` < `SENDTIME_*`
environment variables. Every path of runtime state derives from `home`, so two homes never
share a file.

`Settings` is a frozen pydantic-settings model. A setting is one annotated line in it: its name is
its TOML key and, upper-cased after `SENDTIME_`, its environment variable; its type says what it
accepts. The environment carries text, so the types below also read the text forms:

* `CommaList`: `SENDTIME_IP_ALLOWLIST=10.0.0.0/8,192.168.0.0/16` or a TOML array;
* `KeyValues`: `SENDTIME_MERGE_FIELD_FALLBACKS=first_name=there,locale=en` or a TOML table; a map
  names only the keys it changes, the others keep their defaults;
* `Duration`: `5s`, `5m`, `1h`, `250ms` or a number of seconds (kept as written; `parse_duration`);
* numbers and booleans (`true/false`, `1/0`, `yes/no`, `on/off`) as pydantic parses them.

A bad value, an unreadable file or a TOML key that is not a setting is a `ConfigError` with a
one-line message (the CLI prints it and exits 2). `SENDTIME_*` variables that name no setting
(`SENDTIME_HOME`, `SENDTIME_VENV`, ...) are not settings and are left alone.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import SendtimeError

# the dbt project sits at the repository root (the package is installed editable)
PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_HOME = ".sendtime"
ENV_PREFIX = "SENDTIME_"
TOML_NAME = "sendtime.toml"

# merge-field fallbacks come from the marts' YAML (`merge_fallback`); this setting overrides them
DEFAULT_MERGE_FALLBACKS: dict[str, str] = {}

# DESIGN.md "Streaming sources": source -> topic (the CDC names are Debezium's <prefix>.<schema>.<table>)
DEFAULT_KAFKA_TOPICS: dict[str, str] = {
    "events": "sendtime.events",
    "customers": "shop.public.customers",
    "orders": "shop.public.orders",
    "order_items": "shop.public.order_items",
    "products": "sendtime.products",
}
# SENDTIME_KAFKA_CLIENT__<librdkafka property>=value passes one client option (TLS, SASL) through
KAFKA_CLIENT_ENV_PREFIX = "SENDTIME_KAFKA_CLIENT__"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(SendtimeError, ValueError):
    """A setting has a value that cannot be used."""


def parse_duration(text: str | int | float, *, allow_zero: bool = False) -> float:
    """'5s', '5m', '1h', '250ms' or a bare number of seconds -> seconds (`0s` only with allow_zero)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ConfigError(f"not a duration: {text!r} (use e.g. 5s, 5m, 1h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"a duration must be positive: {text!r}")
    return seconds


# --------------------------------------------------------------------------- setting types


def _comma_list(value: Any) -> Any:
    """`a, b` (environment) or a TOML array -> a tuple of the trimmed, non-empty items."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return tuple(item for item in (str(x).strip() for x in value) if item)
    return value  # anything else: pydantic says what is wrong


def _key_values(value: Any) -> Any:
    """`k=v,k=v` (environment; a part without `=` is skipped) or a TOML table -> a dict of strings."""
    if isinstance(value, str):
        pairs = (part.split("=", 1) for part in value.split(",") if "=" in part)
        return {k.strip(): v.strip() for k, v in pairs}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _interval(value: str) -> str:
    parse_duration(value, allow_zero=True)
    return value


def _optional_path(value: Any) -> Any:
    """An empty value (`SENDTIME_TLS_CERTFILE=`) means unset."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return Path(value).expanduser() if isinstance(value, str) else value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]
OptionalPath = Annotated[Path | None, BeforeValidator(_optional_path)]
KeyValues = Annotated[dict[str, str], BeforeValidator(_key_values)]
Duration = Annotated[str, AfterValidator(_duration)]
# a duration where 0 means "continuously" (schedule_every)
Interval = Annotated[str, AfterValidator(_interval)]


# --------------------------------------------------------------------------- the settings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix=ENV_PREFIX, coerce_numbers_to_str=True
    )  # `schedule_every = 30` means "30"

    home: Path
    # online store: SQLite under home by default; postgresql+psycopg://... for several API nodes
    online_store_url: str = ""
    # API nodes read from this one when set (a PostgreSQL streaming replica); writes go to online_store_url
    online_store_read_url: str = ""
    # how long an API request waits for a locked or unreachable store before its 503 (Retry-After)
    api_store_timeout: Duration = "1s"
    # pipeline
    schedule_every: Interval = "5m"  # 0s: continuous, a cycle as soon as a batch lands (docs/pipeline.md)
    recommendations_refresh_every: Duration = "1h"
    lake_overlap_seconds: float = 300.0
    # the dbt project a cycle builds: the repository's by default (an analyst's copy, a branch)
    project_dir: str = ""
    # the warehouse engine (DESIGN.md "Warehouses"; docs/models.md "Spark"): embedded DuckDB, or the
    # same models on Spark with Delta Lake tables
    warehouse: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[2]"  # local[N], spark://, yarn, k8s:// (docs/spark.md)
    spark_conf: KeyValues = Field(default_factory=dict)  # Spark settings over the spark target's own
    spark_warehouse_dir: str = ""  # the Delta tables' folder (a path or URI); empty: <home>/spark/warehouse
    # consistency (docs/recovery.md): the scheduler reconciles lake, warehouse and store this often
    reconcile_every: Duration = "1h"
    reconcile_repair: bool = False  # the scheduler's reconcile republishes what drifted
    # serving
    cache_max_age: int = 300
    rate_limit_per_second: float = 10_000.0
    rate_limit_burst: int = 20_000
    ready_max_age_seconds: float = 3600.0
    batch_max_ids: int = 1000
    collector_max_events: int = 1000
    collector_max_body_bytes: int = 5 * 1024 * 1024
    ip_allowlist: CommaList = ()
    status_page_access: Literal["open", "key"] = "key"  # "key": an API key with the admin scope
    merge_field_fallbacks: KeyValues = Field(default_factory=lambda: dict(DEFAULT_MERGE_FALLBACKS))
    # email platforms' webhooks (docs/api.md "Webhooks"): set, a platform's signature replaces the API key
    sendgrid_webhook_public_key: str = ""  # SendGrid's verification key (base64 DER, or PEM)
    mailchimp_webhook_key: str = ""  # the Mailchimp Transactional webhook's key (a secret)
    mailchimp_webhook_url: str = ""  # the webhook URL exactly as registered; empty: the request's URL
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # privacy and access (docs/privacy.md): encryption at rest, retention, TLS, OAuth, metrics
    # a directory outside the home (other storage) that keeps a copy of the erasure register and its
    # key: erasures made after a backup apply again after a restore even when the backup was moved
    erasure_register_mirror: OptionalPath = None
    encryption_key_file: OptionalPath = None  # a random 256-bit key: lake, quarantine, warehouse encrypted
    quarantine_retention_days: float = Field(default=30.0, gt=0)
    tls_certfile: OptionalPath = None
    tls_keyfile: OptionalPath = None
    allow_plain_http: bool = False  # a non-loopback bind without TLS (behind a TLS-terminating proxy)
    metrics_access: Literal["open", "key"] = "open"  # "key": /metrics needs an admin-scoped key or token
    oauth_token_lifetime: Duration = "1h"
    auth_failures_per_second: float = Field(default=5.0, gt=0)  # failed authentications per client address
    auth_failures_burst: int = Field(default=50, ge=1)
    # kafka (`sendtime consume`, docs/kafka.md)
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topics: KeyValues = Field(default_factory=lambda: dict(DEFAULT_KAFKA_TOPICS))  # source -> topic
    kafka_group_id: str = "sendtime"
    kafka_flush_seconds: float = Field(1.0, gt=0)
    kafka_flush_records: int = Field(50_000, ge=1)
    # librdkafka options passed through (TLS, SASL); also SENDTIME_KAFKA_CLIENT__<option>=value
    kafka_client: KeyValues = Field(default_factory=dict)

    @field_validator("*", mode="after")
    @classmethod
    def _maps_extend_their_default(cls, value: Any, info: ValidationInfo) -> Any:
        """A map setting names only the keys it changes: the default's other keys are kept."""
        if isinstance(value, dict) and info.field_name:
            default = cls.model_fields[info.field_name].get_default(call_default_factory=True)
            if isinstance(default, Mapping):
                return {**default, **value}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: `home` (given to load_settings), `SENDTIME_*` variables, sendtime.toml;
        then the defaults. pydantic-settings' own environment, dotenv and secrets-folder sources
        are not used: the environment is the one handed to load_settings (tests pass their own)."""
        return init_settings, _Environment(settings_cls), _TomlFile(settings_cls)

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
    def spark_warehouse_location(self) -> str:
        """Where the Spark warehouse's Delta tables live (`spark_warehouse_dir`, or in the home)."""
        return self.spark_warehouse_dir or str((self.home / "spark" / "warehouse").absolute())

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
    def dbt_project_dir(self) -> Path:
        return Path(self.project_dir).absolute() if self.project_dir else PROJECT_DIR

    @property
    def run_dir(self) -> Path:
        """Pid files and sockets of running processes (scheduler, server)."""
        return self.home / "run"

    @property
    def store_url(self) -> str:
        return self.online_store_url or f"sqlite:///{(self.home / 'online.sqlite').resolve()}"

    @property
    def store_read_url(self) -> str:
        """Where the API reads: the replica when one is set, else the store itself."""
        return self.online_store_read_url or self.store_url

    @property
    def api_store_timeout_seconds(self) -> float:
        return parse_duration(self.api_store_timeout)

    @property
    def reconcile_seconds(self) -> float:
        return parse_duration(self.reconcile_every)

    @property
    def schedule_seconds(self) -> float:
        return parse_duration(self.schedule_every, allow_zero=True)

    @property
    def recommendations_refresh_seconds(self) -> float:
        return parse_duration(self.recommendations_refresh_every)

    @property
    def oauth_token_seconds(self) -> int:
        return max(1, int(parse_duration(self.oauth_token_lifetime)))

    @property
    def erasure_dir(self) -> Path:
        """The erasure register and the lake's id index (docs/privacy.md "Erasure")."""
        return self.home / "erasure"

    def env(self) -> dict[str, str]:
        """Environment that hands these settings to a child process (gunicorn, dbt)."""
        out = {"SENDTIME_HOME": str(self.home)}
        if self.warehouse != "duckdb":
            out["SENDTIME_WAREHOUSE"] = self.warehouse
        if self.online_store_url:
            out["SENDTIME_ONLINE_STORE_URL"] = self.online_store_url
        if self.encryption_key_file is not None:
            out["SENDTIME_ENCRYPTION_KEY_FILE"] = str(self.encryption_key_file)
        if self.online_store_read_url:
            out["SENDTIME_ONLINE_STORE_READ_URL"] = self.online_store_read_url
        return out

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, checked like loaded ones (what `dataclasses.replace`
        did for the dataclass this model replaced)."""
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise _config_error(exc, {}) from None


# --------------------------------------------------------------------------- sources

# the environment that load_settings reads (os.environ unless it is given one)
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("sendtime_settings_environ", default=None)


def _setting_names(settings_cls: type[BaseSettings]) -> list[str]:
    return [name for name in settings_cls.model_fields if name != "home"]


class _Environment(PydanticBaseSettingsSource):
    """`SENDTIME_<NAME>` for every setting, as the text the environment holds (the setting's type
    reads it: no JSON decoding of lists and maps)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        environ = _environ.get()
        environ = os.environ if environ is None else environ
        prefix = self.config.get("env_prefix") or ""
        self.values = {
            name: environ[prefix + name.upper()]
            for name in _setting_names(settings_cls)
            if prefix + name.upper() in environ
        }
        client = _kafka_client_env(environ)
        if client:  # one variable per client option, merged over SENDTIME_KAFKA_CLIENT's map form
            self.values["kafka_client"] = {**_key_values(self.values.get("kafka_client", {})), **client}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class _TomlFile(PydanticBaseSettingsSource):
    """`<home>/sendtime.toml`, when it exists: its top level, or its `[sendtime]` table. The home
    comes from the source before it (the init arguments). A key that is not a setting is an error."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        home = self.current_state.get("home")
        if home is None:
            return {}
        path = Path(home) / TOML_NAME
        if not path.is_file():
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        table = data.get("sendtime", data)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [sendtime] must be a table of settings")
        unknown = sorted(set(table) - set(_setting_names(self.settings_cls)))
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        return dict(table)


# --------------------------------------------------------------------------- loading


def _config_error(exc: ValidationError, environ: Mapping[str, str]) -> ConfigError:
    """pydantic's errors -> one line naming each setting, where its value came from, and why."""
    errors = exc.errors()
    unknown = sorted({str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]})
    if unknown:
        return ConfigError(f"unknown settings: {', '.join(unknown)}")
    parts = []
    for error in errors:
        name = str(error["loc"][0]) if error["loc"] else "settings"
        variable = ENV_PREFIX + name.upper()
        origin = f" ({variable})" if variable in environ else ""
        if error["type"] == "value_error" and "error" in error.get("ctx", {}):
            parts.append(f"setting {name}{origin}: {error['ctx']['error']}")
        else:
            parts.append(f"setting {name}{origin}: cannot use {error['input']!r}: {error['msg']}")
    return ConfigError("; ".join(parts))


def load_settings(home: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of `home` (else `$SENDTIME_HOME`, else ./.sendtime): defaults < its
    sendtime.toml < `SENDTIME_*` variables of `environ` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    home_path = Path(home or environ.get("SENDTIME_HOME") or DEFAULT_HOME).expanduser().absolute()
    token = _environ.set(environ)
    try:
        return Settings(home=home_path)
    except ValidationError as exc:
        raise _config_error(exc, environ) from None
    finally:
        _environ.reset(token)


def _kafka_client_env(environ: Mapping[str, str]) -> dict[str, str]:
    """`SENDTIME_KAFKA_CLIENT__security.protocol=SASL_SSL` -> {"security.protocol": "SASL_SSL"}.
    Shells cannot export names with dots, so `..._SECURITY_PROTOCOL` works too (librdkafka's
    property names use dots, never underscores)."""
    out = {}
    for name, value in environ.items():
        if name.startswith(KAFKA_CLIENT_ENV_PREFIX) and len(name) > len(KAFKA_CLIENT_ENV_PREFIX):
            key = name[len(KAFKA_CLIENT_ENV_PREFIX) :]
            out[key if "." in key else key.lower().replace("_", ".")] = value
    return out


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
