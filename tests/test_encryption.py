"""Encryption at rest (DESIGN.md "Privacy and access"): with encryption_key_file set, the lake, the
quarantine and the DuckDB warehouse cannot be read without the key, hold no plaintext, and the
product works unchanged; a missing, wrong or newly added key is a clear error at start."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from pathlib import Path

import duckdb
import pytest

from tests.helpers.cli import Cli
from tests.helpers.privacy import AS_OF, EMAIL, FIRST, FORGET, LAST, write_sources


def _key(path: Path) -> Path:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def _ingest(cli: Cli, sources: dict[str, Path]) -> None:
    for source, path in sources.items():
        cli("ingest", source, str(path))


def _profiles(home: Path) -> dict[str, str]:
    con = sqlite3.connect(home / "online.sqlite")
    try:
        return dict(con.execute("select customer_id, body from profiles"))
    finally:
        con.close()


def test_key_errors_are_clear_at_start(tmp_path):
    sources = write_sources(tmp_path / "in")
    home = tmp_path / "home"

    def cli(key: Path | None) -> Cli:
        return Cli(home, {"SENDTIME_ENCRYPTION_KEY_FILE": str(key) if key else ""})

    missing = cli(tmp_path / "no-such.key")("ingest", "events", str(sources["events"]), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    loose = _key(tmp_path / "loose.key")
    loose.chmod(0o644)
    proc = cli(loose)("ingest", "events", str(sources["events"]), check=False)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    junk.chmod(0o600)
    proc = cli(junk)("ingest", "events", str(sources["events"]), check=False)
    assert proc.returncode == 2 and "256-bit key" in proc.stderr
    assert not (home / "lake").exists() or not any((home / "lake").rglob("*.parquet"))  # nothing written

    right = _key(tmp_path / "right.key")
    cli(right)("ingest", "events", str(sources["events"]))
    wrong = cli(_key(tmp_path / "wrong.key"))("ingest", "events", str(sources["events"]), check=False)
    assert wrong.returncode == 2 and "wrong key file" in wrong.stderr
    plain = cli(None)("ingest", "events", str(sources["events"]), check=False)
    assert plain.returncode == 2 and "encrypted" in plain.stderr and "encryption_key_file" in plain.stderr
    assert len(list((home / "lake").rglob("*.parquet"))) == 1  # no plaintext file next to the encrypted one

    other = tmp_path / "plain-home"
    Cli(other)("ingest", "events", str(sources["events"]))
    added = Cli(other, {"SENDTIME_ENCRYPTION_KEY_FILE": str(right)})(
        "ingest", "events", str(sources["events"]), check=False
    )
    assert added.returncode == 2 and "unencrypted data" in added.stderr


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory):
    """The same input in an encrypted home and a plaintext one, one cycle each."""
    root = tmp_path_factory.mktemp("encryption")
    sources = write_sources(root / "in")
    key = _key(root / "sendtime.key")  # outside the home, as docs/privacy.md advises
    encrypted = Cli(root / "encrypted", {"SENDTIME_ENCRYPTION_KEY_FILE": str(key)})
    plain = Cli(root / "plain")
    for cli in (encrypted, plain):
        _ingest(cli, sources)
        result = cli.json("run", "--as-of", AS_OF)
        assert result["status"] == "success", result
    return {"encrypted": encrypted, "plain": plain, "key": key}


def test_without_the_key_nothing_can_be_read(homes):
    home = homes["encrypted"].home
    lake = sorted((home / "lake").rglob("*.parquet"))
    quarantine = sorted((home / "quarantine").rglob("*.*"))
    assert lake and quarantine and all(p.suffix == ".parquet" for p in quarantine)
    con = duckdb.connect()
    for path in (lake[0], quarantine[0]):
        with pytest.raises(duckdb.Error, match="encrypted"):
            con.execute(f"select * from read_parquet('{path}')").fetchall()
    with pytest.raises(duckdb.Error, match="encrypted"):
        duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    with pytest.raises(duckdb.Error):  # a wrong key is refused too
        con.execute(f"ATTACH '{home / 'warehouse.duckdb'}' AS w (ENCRYPTION_KEY 'wrong', READ_ONLY)")
    # no plaintext in the bytes of the lake, the quarantine or the warehouse
    for path in [*lake, *quarantine, home / "warehouse.duckdb"]:
        raw = path.read_bytes()
        for needle in (FORGET, EMAIL, FIRST, LAST):
            assert needle.encode() not in raw, (path, needle)


def test_the_product_works_unchanged_with_the_key(homes):
    encrypted, plain = homes["encrypted"], homes["plain"]
    assert _profiles(encrypted.home) == _profiles(plain.home) and len(_profiles(plain.home)) == 2
    # and an erasure in the encrypted home
    encrypted("forget", FORGET)
    result = encrypted.json("run", "--as-of", AS_OF)
    assert result["status"] == "success" and result["erasure"]["requests"] == 1
    assert FORGET not in _profiles(encrypted.home)
    assert encrypted("forget", "--status", FORGET).stdout.strip() == "complete"
    # an analyst reads the encrypted warehouse with the key (the base64 text of the key file)
    con = duckdb.connect()
    con.execute(
        f"ATTACH '{encrypted.home / 'warehouse.duckdb'}' AS w "
        f"(ENCRYPTION_KEY '{Path(homes['key']).read_text().strip()}', READ_ONLY)"
    )
    assert con.execute("select count(*) from w.customer_profiles").fetchall() == [(1,)]


def test_spark_refuses_an_encrypted_home(tmp_path):
    from pipeline.spark_session import SparkSetupError, get_session

    (tmp_path / "encryption.json").write_text('{"key_id": "x"}')
    with pytest.raises(SparkSetupError, match="not supported with the Spark"):
        get_session(tmp_path)


def test_rekey_encrypts_a_plaintext_home_then_rotates_the_key(homes, tmp_path):
    plain = homes["plain"]
    before = _profiles(plain.home)
    first, second = _key(tmp_path / "first.key"), _key(tmp_path / "second.key")
    plain.json("rekey", str(first))
    with_first = Cli(plain.home, {"SENDTIME_ENCRYPTION_KEY_FILE": str(first)})
    assert not list((plain.home / "quarantine").rglob("*.jsonl"))
    with pytest.raises(duckdb.Error, match="encrypted"):
        duckdb.connect(str(plain.home / "warehouse.duckdb"), read_only=True)
    assert with_first.json("run", "--as-of", AS_OF)["status"] == "success"
    assert _profiles(plain.home) == before

    report = with_first.json("rekey", str(second))
    assert report["files"] > 0 and report["warehouse"] is True
    stale = with_first("run", "--as-of", AS_OF, check=False)
    assert stale.returncode == 2 and "wrong key file" in stale.stderr
    with_second = Cli(plain.home, {"SENDTIME_ENCRYPTION_KEY_FILE": str(second)})
    assert with_second.json("run", "--as-of", AS_OF)["status"] == "success"
    assert _profiles(plain.home) == before
