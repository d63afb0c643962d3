"""Encryption at rest (DESIGN.md "Privacy and access"): the lake, the quarantine and the warehouse.

With `encryption_key_file` set (a file holding a random 256-bit key), every lake and quarantine file
is Parquet encrypted with AES-256-GCM (Parquet modular encryption, uniform: the key encrypts the
footer and every column), and the DuckDB warehouse is an encrypted database (AES-GCM, DuckDB's own
format). Without the key neither can be read: DuckDB refuses ("File ... is encrypted, but
'encryption_config' was not set"; "... encryption key ..."), and the bytes hold no plaintext.

DuckDB writes and reads everything encrypted (pipeline/lake_writer.py for the lake and the quarantine,
dbt-duckdb for the warehouse). Writing needs a crypto module with a secure random source for the
AES-GCM nonces: DuckDB's httpfs extension (OpenSSL). `load_writable_crypto` loads it from DuckDB's
extension folder, or from the `duckdb-extension-httpfs` package of the same DuckDB version. DuckDB's
other way out (`SET force_mbedtls_unsafe`) draws nonces from a non-cryptographic generator: never
used. Reading needs only the key (`prepare_duckdb`, then `read_parquet(..., PARQUET_READ_OPTION)`).

The home remembers which key its data was written with (`encryption.json`: a key id, never the key),
so a missing, wrong or newly added key is a clear error at start (`check_home`), never a silent
plaintext write next to encrypted files or a lake that reads half its files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.clock import iso_z, utcnow
from pipeline.config import ConfigError, Settings

MARKER = "encryption.json"
# the name DuckDB's Parquet reader knows the key by (PRAGMA add_parquet_key)
PARQUET_KEY_NAME = "sendtime"
PARQUET_READ_OPTION = f"encryption_config = {{footer_key: '{PARQUET_KEY_NAME}'}}"
CIPHER = "AES-256-GCM"
KEY_BYTES = 32


class EncryptionError(ConfigError):
    """The key, the home's encryption state or the crypto module does not allow this (exit 2)."""


@dataclass(frozen=True)
class AtRest:
    """The key of a home whose data is encrypted."""

    key: bytes
    path: Path

    @property
    def key_id(self) -> str:
        """Names the key without revealing it (in encryption.json, messages, `sendtime` output)."""
        return key_id(self.key)

    @property
    def text(self) -> str:
        """The key as base64: DuckDB takes it this way (Parquet keys and database keys)."""
        return base64.b64encode(self.key).decode()

    def prepare_duckdb(self, con: Any) -> None:
        """Let a DuckDB connection read the encrypted lake (`read_parquet(..., PARQUET_READ_OPTION)`)."""
        con.execute(f"PRAGMA add_parquet_key('{PARQUET_KEY_NAME}', '{self.text}')")


def key_id(key: bytes) -> str:
    return hmac.new(key, b"sendtime encryption key id", hashlib.sha256).hexdigest()[:16]


def read_key_file(path: Path) -> bytes:
    """The 32 bytes of a key file: raw bytes, base64 text (`openssl rand -base64 32`) or 64 hex
    digits. A file others can read, or that holds anything else, is refused with the reason."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise EncryptionError(f"encryption_key_file {path}: no such file") from None
    except OSError as exc:
        raise EncryptionError(f"encryption_key_file {path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise EncryptionError(f"encryption_key_file {path}: not a regular file")
    if st.st_mode & 0o077:
        raise EncryptionError(
            f"encryption_key_file {path}: permissions {stat.S_IMODE(st.st_mode):04o} let others "
            "read the key: chmod 600 it"
        )
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    for decode in (lambda t: base64.b64decode(t, validate=True), base64.urlsafe_b64decode, binascii.unhexlify):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise EncryptionError(
        f"encryption_key_file {path}: expected a random 256-bit key (32 bytes, their base64 "
        "or 64 hex digits), e.g. `openssl rand -base64 32`"
    )


# --------------------------------------------------------------------------- the home's state

_CACHE: dict[tuple[str, str], AtRest | None] = {}
_LOCK = threading.Lock()


def _marker(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EncryptionError(f"{home / MARKER}: unreadable ({exc}); it records which key encrypts this home") from None


def _has_data(settings: Settings) -> bool:
    """Does the home hold lake, quarantine or warehouse files (written with or without a key)?"""
    if settings.warehouse_path.exists():
        return True
    for folder in (settings.lake_dir, settings.quarantine_dir):
        if folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*")):
            return True
    return False


def write_marker(home: Path, at_rest: AtRest | None) -> None:
    """Record (atomically) which key the home's data is encrypted with; None: plaintext (no marker)."""
    path = home / MARKER
    if at_rest is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{MARKER}.tmp")
    tmp.write_text(json.dumps({"key_id": at_rest.key_id, "cipher": CIPHER, "since": iso_z(utcnow())}) + "\n")
    os.replace(tmp, path)
    forget_cache()


def check_home(settings: Settings) -> AtRest | None:
    """The home's key (None: the home is plaintext), after checking that the configured key is the
    one its data was written with. Called at the start of every command that touches the data, and
    by every writer and reader of the lake (cached per process)."""
    cache_key = (str(settings.home), str(settings.encryption_key_file or ""))
    with _LOCK:
        if cache_key in _CACHE:
            return _CACHE[cache_key]
    marker = _marker(settings.home)
    if settings.encryption_key_file is None:
        if marker is not None:
            raise EncryptionError(
                f"this home's data is encrypted (key id {marker.get('key_id')}): set "
                "encryption_key_file (SENDTIME_ENCRYPTION_KEY_FILE) to the file holding its key"
            )
        result = None
    else:
        result = AtRest(read_key_file(settings.encryption_key_file), Path(settings.encryption_key_file))
        if marker is None:
            if _has_data(settings):
                raise EncryptionError(
                    "encryption_key_file is set but this home holds unencrypted data: encrypt it "
                    "first with `sendtime rekey KEY_FILE` (docs/privacy.md), or use a new home"
                )
            settings.home.mkdir(parents=True, exist_ok=True)
            write_marker(settings.home, result)
        elif marker.get("rekeying_to"):
            raise EncryptionError(
                f"a key rotation of this home was interrupted (from key id {marker.get('key_id')} "
                f"to {marker['rekeying_to']}): run `sendtime rekey` with the new key file again"
            )
        elif marker.get("key_id") != result.key_id:
            raise EncryptionError(
                f"encryption_key_file {result.path} holds key id {result.key_id}, but this home's "
                f"data is encrypted with key id {marker.get('key_id')}: wrong key file"
            )
    with _LOCK:
        _CACHE[cache_key] = result
    return result


def at_rest(settings: Settings) -> AtRest | None:
    """The key lake and warehouse I/O uses (None: plaintext); `check_home` once per process."""
    return check_home(settings)


def forget_cache() -> None:
    with _LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------- DuckDB's writable crypto


def _httpfs_package_path(version: str) -> Path | None:
    """The httpfs extension shipped by the `duckdb-extension-httpfs` package, when it is the one
    built for this DuckDB version (an extension loads only into the version it was built for)."""
    try:
        import duckdb_extension_httpfs  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(duckdb_extension_httpfs.__file__).parent / "extensions" / version / "httpfs.duckdb_extension"
    return path if path.is_file() else None


def load_writable_crypto(con: Any) -> None:
    """Load DuckDB's OpenSSL crypto module (the httpfs extension), needed to write an encrypted
    database. Never falls back to the insecure generator; a clear error when httpfs is missing."""
    import duckdb

    try:
        con.execute("LOAD httpfs")  # installed in DuckDB's extension folder (INSTALL httpfs)
        return
    except duckdb.Error:
        pass
    version = duckdb.__version__ if duckdb.__version__.startswith("v") else f"v{duckdb.__version__}"
    path = _httpfs_package_path(version)
    if path is None:
        raise EncryptionError(
            f"writing the encrypted warehouse needs DuckDB's httpfs extension (OpenSSL) for DuckDB {version}: "
            "pip install duckdb-extension-httpfs of the same version, or run `INSTALL httpfs` once where "
            "DuckDB's extension repository is reachable (docs/privacy.md)"
        )
    con.execute(f"LOAD '{path}'")


def attach_sql(path: Path, at_rest: AtRest | None, alias: str, read_only: bool) -> str:
    """ATTACH a DuckDB database file, with its key when the home is encrypted."""
    options = []
    if at_rest is not None:
        options.append(f"ENCRYPTION_KEY '{at_rest.text}'")
    if read_only:
        options.append("READ_ONLY")
    quoted = str(path).replace("'", "''")
    return f"ATTACH '{quoted}' AS {alias}" + (f" ({', '.join(options)})" if options else "")
