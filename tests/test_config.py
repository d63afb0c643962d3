"""Configuration: defaults < sendtime.toml < SENDTIME_* env, and every path under the home."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, ensure_home, load_settings, parse_duration


def test_defaults_put_every_path_under_home(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    for path in (s.lake_dir, s.quarantine_dir, s.warehouse_path, s.dbt_target_dir, s.dbt_log_dir, s.log_dir, s.run_dir):
        assert tmp_path in path.parents
    assert s.store_url == f"sqlite:///{tmp_path / 'online.sqlite'}"
    assert s.rate_limit_per_second == 10_000 and s.rate_limit_burst == 20_000
    assert s.merge_field_fallbacks == {}  # the marts' YAML holds the defaults (merge_fallback)


def test_toml_then_env_override(tmp_path: Path) -> None:
    (tmp_path / "sendtime.toml").write_text(
        'schedule_every = "30s"\ncache_max_age = 60\n[merge_field_fallbacks]\nfirst_name = "friend"\n'
    )
    s = load_settings(tmp_path, environ={})
    assert (s.schedule_seconds, s.cache_max_age, s.merge_field_fallbacks["first_name"]) == (30, 60, "friend")
    assert s.merge_field_fallbacks == {"first_name": "friend"}  # overrides only; the YAML has the rest

    s = load_settings(tmp_path, environ={"SENDTIME_CACHE_MAX_AGE": "5", "SENDTIME_IP_ALLOWLIST": "127.0.0.1/32, 10.0.0.0/8"})
    assert s.cache_max_age == 5
    assert s.ip_allowlist == ("127.0.0.1/32", "10.0.0.0/8")


def test_home_from_environment(tmp_path: Path) -> None:
    s = load_settings(environ={"SENDTIME_HOME": str(tmp_path / "h")})
    assert s.home == tmp_path / "h"


@pytest.mark.parametrize("environ, needle", [
    ({"SENDTIME_CACHE_MAX_AGE": "soon"}, "cache_max_age"),
    ({"SENDTIME_SCHEDULE_EVERY": "fortnightly"}, "duration"),
    ({"SENDTIME_STATUS_PAGE_ACCESS": "public"}, "status_page_access"),
])
def test_bad_values_are_clear_errors(tmp_path: Path, environ: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(tmp_path, environ=environ)


def test_unknown_toml_setting_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sendtime.toml").write_text("shedule_every = '5m'\n")
    with pytest.raises(ConfigError, match="shedule_every"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize("text, seconds", [("5s", 5), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("7", 7), (2, 2)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


def test_unwritable_home_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        ensure_home(load_settings(blocker / "home", environ={}))
