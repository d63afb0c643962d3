"""Configuration: defaults < sendtime.toml < SENDTIME_* env, and every path under the home."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from pipeline.config import DEFAULT_MERGE_FALLBACKS, ConfigError, ensure_home, load_settings, parse_duration


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

    s = load_settings(
        tmp_path, environ={"SENDTIME_CACHE_MAX_AGE": "5", "SENDTIME_IP_ALLOWLIST": "127.0.0.1/32, 10.0.0.0/8"}
    )
    assert s.cache_max_age == 5
    assert s.ip_allowlist == ("127.0.0.1/32", "10.0.0.0/8")


def test_home_from_environment(tmp_path: Path) -> None:
    s = load_settings(environ={"SENDTIME_HOME": str(tmp_path / "h")})
    assert s.home == tmp_path / "h"


@pytest.mark.parametrize(
    "environ, needle",
    [
        ({"SENDTIME_CACHE_MAX_AGE": "soon"}, "cache_max_age"),
        ({"SENDTIME_SCHEDULE_EVERY": "fortnightly"}, "duration"),
        ({"SENDTIME_STATUS_PAGE_ACCESS": "public"}, "status_page_access"),
    ],
)
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


def test_environment_text_forms(tmp_path: Path) -> None:
    s = load_settings(
        tmp_path,
        environ={
            "SENDTIME_MERGE_FIELD_FALLBACKS": "first_name=friend, locale = de",
            "SENDTIME_IP_ALLOWLIST": "10.0.0.0/8,,192.168.0.0/16,",
            "SENDTIME_RATE_LIMIT_PER_SECOND": "250",
            "SENDTIME_RECOMMENDATIONS_REFRESH_EVERY": "250ms",
            "SENDTIME_VENV": "/elsewhere",  # SENDTIME_* names that are not settings are not settings
        },
    )
    assert s.merge_field_fallbacks == {**DEFAULT_MERGE_FALLBACKS, "first_name": "friend", "locale": "de"}
    assert s.ip_allowlist == ("10.0.0.0/8", "192.168.0.0/16")
    assert s.rate_limit_per_second == 250.0 and s.recommendations_refresh_seconds == 0.25


def test_a_variable_replaces_the_file_value_and_a_map_keeps_its_defaults(tmp_path: Path) -> None:
    (tmp_path / "sendtime.toml").write_text(
        '[sendtime]\nworkers = 3\nschedule_every = 30\n[sendtime.merge_field_fallbacks]\nfirst_name = "friend"\n'
    )
    s = load_settings(tmp_path, environ={"SENDTIME_MERGE_FIELD_FALLBACKS": "locale=fr"})
    assert (s.workers, s.schedule_every, s.schedule_seconds) == (3, "30", 30)  # a [sendtime] table works too
    # the variable replaces the file's map; both name only the keys they change (the YAML has the rest)
    assert s.merge_field_fallbacks == {"locale": "fr"}


def test_errors_are_one_line_and_name_the_setting_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"SENDTIME_PORT": "eighty", "SENDTIME_RECOMMENDATIONS_REFRESH_EVERY": "0s"})
    message = str(caught.value)
    assert "\n" not in message
    assert "setting port (SENDTIME_PORT): cannot use 'eighty'" in message
    assert (
        "setting recommendations_refresh_every (SENDTIME_RECOMMENDATIONS_REFRESH_EVERY): a duration must be positive"
        in message
    )
    (tmp_path / "sendtime.toml").write_text("workers = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"^setting workers: cannot use \[1, 2\]"):
        load_settings(tmp_path, environ={})
    (tmp_path / "sendtime.toml").write_text("workers = \n")
    with pytest.raises(ConfigError, match="sendtime.toml"):
        load_settings(tmp_path, environ={})
    (tmp_path / "sendtime.toml").write_text("home = '/elsewhere'\nworkerz = 2\n")
    with pytest.raises(ConfigError, match="^unknown settings: home, workerz$"):
        load_settings(tmp_path, environ={})


def test_the_cli_prints_a_bad_setting_in_one_line_and_exits_2(cli) -> None:
    cli.env["SENDTIME_CACHE_MAX_AGE"] = "soon"
    proc = cli("runs", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sendtime: error: setting cache_max_age (SENDTIME_CACHE_MAX_AGE): cannot use 'soon': "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_settings_are_frozen_and_replace_checks_the_change(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={})
    with pytest.raises(pydantic.ValidationError):
        s.workers = 4  # type: ignore[misc]
    more = s.replace(workers=4)
    assert (more.workers, s.workers, more.home) == (4, 2, s.home)
    with pytest.raises(ConfigError, match="status_page_access"):
        s.replace(status_page_access="public")
