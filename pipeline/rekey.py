"""`sendtime rekey NEW_KEY_FILE`: encrypt a home with a new key (rotation), or for the first time.

Every lake and quarantine file and the warehouse are rewritten under the new key, each the way an
erasure rewrites a file (a new file, fsynced, renamed): a reader sees the old file or the new one.
While it runs, `encryption.json` says so (`rekeying_to`), and every other command refuses to start
on the home (pipeline/encryption.py): no writer adds a file under the old key meanwhile. It holds the
cycle lock. Killed, it is run again with the same new key: files already under the new key are
skipped. At the end the home records the new key's id; then point `encryption_key_file` at it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.contracts import lake_schema
from pipeline.encryption import (
    MARKER,
    AtRest,
    EncryptionError,
    at_rest,
    attach_sql,
    forget_cache,
    load_writable_crypto,
    read_key_file,
    write_marker,
)
from pipeline.lake_index import data_files
from pipeline.lake_writer import (
    QUARANTINE_SCHEMA,
    iter_parquet,
    parquet_schema,
    quarantine_table,
    read_quarantine,
    write_parquet_file,
)
from pipeline.locks import FileLock


@dataclass
class RekeyReport:
    key_id: str
    files: int = 0
    skipped: int = 0
    warehouse: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _readable_with(path: Path, key: AtRest | None) -> bool:
    try:
        parquet_schema(path, key)
        return True
    except Exception:  # noqa: BLE001 - not this key's file (DuckDB and pyarrow raise their own errors)
        return False


def _schema(area: str, source: str, path: Path, key: AtRest | None) -> pa.Schema:
    if area == "quarantine":
        return QUARANTINE_SCHEMA
    try:
        return lake_schema(source)
    except KeyError:
        return parquet_schema(path, key)


def rekey(settings: Settings, new_key_file: Path) -> RekeyReport:
    new = AtRest(read_key_file(new_key_file), Path(new_key_file))
    marker_path = settings.home / MARKER
    marker = json.loads(marker_path.read_text()) if marker_path.exists() else None
    resuming = bool(marker and marker.get("rekeying_to") == new.key_id)
    if resuming:  # an interrupted run: the setting still names the old key (none: the home was plaintext)
        old_path = settings.encryption_key_file
        old = None if old_path is None else AtRest(read_key_file(old_path), Path(old_path))
        if (old.key_id if old else None) != marker.get("key_id"):
            raise EncryptionError(
                "encryption_key_file is not the key this home was encrypted with before the interrupted rotation"
            )
    else:
        old = at_rest(settings)  # the current key (or none): a wrong one is refused here
        if old is not None and old.key_id == new.key_id:
            raise EncryptionError("the new key is the home's current key")
    lock = FileLock(settings.run_dir / "cycle.lock")
    if not lock.acquire():
        raise EncryptionError("a cycle is running on this home: stop the scheduler before `sendtime rekey`")
    try:
        tmp = marker_path.with_name(f".{MARKER}.tmp")
        tmp.write_text(
            json.dumps({"key_id": old.key_id if old else None, "rekeying_to": new.key_id, "since": iso_z(utcnow())})
            + "\n"
        )
        os.replace(tmp, marker_path)
        forget_cache()
        report = RekeyReport(new.key_id)
        for data in data_files(settings):
            path = data.path
            if path.suffix == ".jsonl":  # a plaintext quarantine: encrypted Parquet from now on
                rows = read_quarantine(path, None)
                write_parquet_file(path.with_suffix(".parquet"), iter([quarantine_table(rows)]), QUARANTINE_SCHEMA, new)
                path.unlink()
                report.files += 1
                continue
            if _readable_with(path, new):
                report.skipped += 1  # done by an earlier, interrupted run
                continue
            write_parquet_file(path, iter_parquet(path, old), _schema(data.area, data.source, path, old), new)
            report.files += 1
        for side in sorted(settings.erasure_dir.glob("*.json")) + sorted(settings.erasure_dir.glob("*.parquet")):
            if side.name in ("pending.json", "inflight.json"):
                body = side.read_text()
                table = pa.table({"body": [body]})
                write_parquet_file(side.with_suffix(".parquet"), iter([table]), table.schema, new)
                side.unlink()
            elif side.name in ("pending.parquet", "inflight.parquet") and not _readable_with(side, new):
                table = pa.Table.from_batches(list(iter_parquet(side, old)))
                write_parquet_file(side, iter([table]), table.schema, new)
        report.warehouse = _rekey_warehouse(settings, old, new)
        write_marker(settings.home, new)
        forget_cache()
        return report
    finally:
        lock.release()


def _rekey_warehouse(settings: Settings, old: AtRest | None, new: AtRest) -> bool:
    import duckdb

    path = settings.warehouse_path
    if not path.exists():
        return False
    tmp = path.with_name(".warehouse.rekey.duckdb")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect()
    try:
        load_writable_crypto(con)
        try:
            con.execute(attach_sql(path, old, "old_warehouse", read_only=True))
        except duckdb.Error:
            con.execute(attach_sql(path, new, "old_warehouse", read_only=True))  # done before an interruption
            return True
        con.execute(attach_sql(tmp, new, "new_warehouse", read_only=False))
        con.execute("COPY FROM DATABASE old_warehouse TO new_warehouse")
        con.execute("DETACH new_warehouse")
        con.execute("DETACH old_warehouse")
    finally:
        con.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    return True
