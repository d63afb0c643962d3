"""Atomic writers of lake and quarantine files, and the one reader of both.

Every write goes to `.<name>.tmp` in the final folder, is fsynced, then renamed with `os.replace`:
a reader of the lake sees a whole file or none, and a rewrite (pipeline/erasure.py) leaves the old
file or the new one, never half of either. `abort()` removes the temporary file, so a failed batch
leaves nothing visible. Every writer of lake or quarantine files goes through this module
(tests/test_privacy_rules.py checks that no other module writes Parquet), so encryption at rest
applies to all of them:

* a plaintext home: pyarrow writes Parquet (zstd); the quarantine is JSON lines (`<batch>.jsonl`);
* an encrypted home (pipeline/encryption.py): DuckDB writes and reads every file, encrypted Parquet
  (AES-GCM, the key of the home, OpenSSL's random nonces through DuckDB's httpfs module), and the
  quarantine is encrypted Parquet too (`<batch>.parquet`: `line, reason, raw, source_file` plus the
  Kafka consumer's `topic, partition, offset`). DuckDB, not pyarrow: DuckDB reads the encrypted
  files dbt scans with filter pushdown, and that path fails on pyarrow's encrypted pages ("Computed
  AES tag differs", DuckDB 1.5 and 2.0), while pyarrow cannot read DuckDB's. Batches stream into
  DuckDB's COPY through a bounded queue, so a big file is never held in memory.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.encryption import PARQUET_KEY_NAME, AtRest, load_writable_crypto

# the quarantine's columns when it is Parquet (encrypted homes); JSON lines carry the same keys
QUARANTINE_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("source_file", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int64()),
        ("offset", pa.int64()),
    ]
)
ROW_GROUP_ROWS = 128 * 1024
READ_BATCH_ROWS = 128 * 1024


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # gone, or its folder is: nothing of the batch is visible either way
        pass


def _commit(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# --------------------------------------------------------------------------- DuckDB for encrypted files

_DUCKDB: dict[str, Any] = {}
_DUCKDB_LOCK = threading.Lock()


def _duckdb(key: AtRest) -> Any:
    """A cursor of this process's DuckDB instance for the encrypted lake: OpenSSL crypto loaded
    (writes), the home's Parquet key added (reads). One instance per key, loaded once (~0.3 s)."""
    import duckdb

    with _DUCKDB_LOCK:
        con = _DUCKDB.get(key.key_id)
        if con is None:
            con = duckdb.connect(config={"threads": 1})  # ingest and the erasure use one core
            load_writable_crypto(con)
            key.prepare_duckdb(con)
            _DUCKDB[key.key_id] = con
        return con.cursor()


_ENCRYPTED = f"ENCRYPTION_CONFIG {{footer_key: '{PARQUET_KEY_NAME}'}}"
_READ = f"hive_partitioning = false, encryption_config = {{footer_key: '{PARQUET_KEY_NAME}'}}"


class _EncryptedStream:
    """Batches written to an encrypted Parquet file by DuckDB's COPY, which runs in a thread and
    pulls them from a bounded queue (memory stays at a couple of batches, whatever the file size)."""

    _END = object()

    def __init__(self, path: Path, schema: pa.Schema, key: AtRest) -> None:
        self.schema = schema
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.aborted = False
        cursor = _duckdb(key)
        reader = pa.RecordBatchReader.from_batches(schema, self._batches())

        def copy() -> None:
            try:
                cursor.register("sendtime_incoming", reader)
                cursor.execute(
                    f"COPY (SELECT * FROM sendtime_incoming) TO {_sql_path(path)} "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, {_ENCRYPTED})"
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread
                self.error = exc
            finally:
                cursor.close()

        self.thread = threading.Thread(target=copy, name="sendtime-encrypted-write", daemon=True)
        self.thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if self.aborted:
                raise RuntimeError("write aborted")
            yield from item.cast(self.schema).to_batches(max_chunksize=ROW_GROUP_ROWS)

    def _put(self, item: Any) -> None:
        while True:
            if self.error is not None or not self.thread.is_alive():
                raise self.error or RuntimeError("the encrypted writer stopped")
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def write(self, table: pa.Table) -> None:
        self._put(table)

    def close(self) -> None:
        self._put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.aborted = True
        try:
            self.queue.put_nowait(self._END)
        except queue.Full:
            pass
        self.thread.join(timeout=30)


def _writer(path: Path, schema: pa.Schema, key: AtRest | None) -> Any:
    """A ParquetWriter-like object (write, close) for a plaintext or an encrypted file."""
    if key is None:
        return pq.ParquetWriter(path, schema, compression="zstd")
    return _EncryptedStream(path, schema, key)


def _write(writer: Any, table: pa.Table) -> None:
    if isinstance(writer, pq.ParquetWriter):
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    else:
        writer.write(table)


def _abort(writer: Any) -> None:
    try:
        writer.abort() if isinstance(writer, _EncryptedStream) else writer.close()
    except Exception:  # noqa: BLE001 - the file is being thrown away anyway
        pass


# --------------------------------------------------------------------------- batch writers


class LakeFileWriter:
    """Streams accepted record batches into one Parquet file, created on the first rows only."""

    def __init__(self, final: Path, schema: pa.Schema, at_rest: AtRest | None = None) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp")
        self.schema = schema
        self.at_rest = at_rest
        self.rows = 0
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._writer = _writer(self.tmp, self.schema, self.at_rest)
        _write(self._writer, table.cast(self.schema))
        self.rows += table.num_rows

    def commit(self) -> Path | None:
        """Rename into place; None when no row was written (no file)."""
        if self._writer is None:
            return None
        writer, self._writer = self._writer, None
        writer.close()
        _commit(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self._writer is not None:
            _abort(self._writer)
            self._writer = None
        _remove(self.tmp)


class QuarantineWriter:
    """One row per rejected record: line, reason, raw, source_file. `final` names the JSON-lines
    file; an encrypted home writes `<same stem>.parquet` instead."""

    def __init__(self, final: Path, *, create_empty: bool = True, at_rest: AtRest | None = None) -> None:
        self.at_rest = at_rest
        self.final = final.with_suffix(".parquet") if at_rest is not None else final
        self.tmp = self.final.with_name(f".{self.final.name}.tmp")
        self.rows = 0
        self._fh: Any = None
        self._parquet: Any = None
        if create_empty:
            self._open()

    def _open(self) -> None:
        if self.at_rest is not None:
            self._parquet = _writer(self.tmp, QUARANTINE_SCHEMA, self.at_rest)
        else:
            self._fh = open(self.tmp, "wb")

    @property
    def _opened(self) -> bool:
        return self._fh is not None or self._parquet is not None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self._opened:
            self._open()
        if self._parquet is not None:
            _write(self._parquet, quarantine_table(rows))
        else:
            self._fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        self.rows += len(rows)

    def commit(self) -> Path | None:
        if not self._opened:
            return None
        if self._parquet is not None:
            writer, self._parquet = self._parquet, None
            writer.close()
            _commit(self.tmp, self.final)
            return self.final
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._parquet is not None:
            _abort(self._parquet)
            self._parquet = None
        _remove(self.tmp)


def quarantine_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: r.get(name) for name in QUARANTINE_SCHEMA.names} for r in rows], schema=QUARANTINE_SCHEMA
    )


# --------------------------------------------------------------------------- rewriting


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as `schema`: its columns in the schema's order and types, a column the table lacks as
    nulls. A file written by an earlier version lacks the columns added since (the events'
    `email_hash`): rewriting it (erasure, rekey) must not fail on it."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet_file(
    final: Path, batches: Iterable[pa.RecordBatch | pa.Table], schema: pa.Schema, at_rest: AtRest | None
) -> Path | None:
    """Write (or atomically replace) one lake or quarantine Parquet file from `batches`: a new file
    under a temporary name, fsynced, renamed over `final`. A reader sees the old file or the new one;
    a crash leaves the old one and a `.tmp` file nobody reads. No rows: `final` is removed, unless
    the schema carries key-value metadata (a Kafka batch's offsets, pipeline/kafka/offsets.py: the file must
    stay, empty). Returns the path written, or None when the file was removed."""
    tmp = final.with_name(f".{final.name}.tmp")
    writer: Any = None
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if writer is None:
                writer = _writer(tmp, schema, at_rest)
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            _write(writer, conform(table, schema))
        if writer is None and schema.metadata and at_rest is None:
            writer = _writer(tmp, schema, at_rest)  # an empty file that keeps its metadata
        if writer is None:
            if final.exists():
                final.unlink()
                _fsync_dir(final.parent)
            return None
        done, writer = writer, None
        done.close()
        _commit(tmp, final)
        return final
    except BaseException:
        if writer is not None:
            _abort(writer)
        _remove(tmp)
        raise


def write_jsonl_file(final: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Atomically replace a JSON-lines quarantine file (None and removed when no row is left)."""
    if not rows:
        if final.exists():
            final.unlink()
            _fsync_dir(final.parent)
        return None
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise
    return final


# --------------------------------------------------------------------------- reading


def parquet_schema(path: Path, at_rest: AtRest | None) -> pa.Schema:
    if at_rest is None:
        return pq.read_schema(path)
    cursor = _duckdb(at_rest)
    try:
        return cursor.execute(f"SELECT * FROM read_parquet({_sql_path(path)}, {_READ}) LIMIT 0").arrow().schema
    finally:
        cursor.close()


def iter_parquet(
    path: Path, at_rest: AtRest | None, columns: list[str] | None = None, batch_size: int = READ_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The record batches of a lake or quarantine Parquet file (decrypted with the home's key)."""
    if at_rest is None:
        pf = pq.ParquetFile(path)
        names = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
        yield from pf.iter_batches(batch_size=batch_size, columns=names)
        return
    cursor = _duckdb(at_rest)
    try:
        if columns is not None:
            present = set(parquet_schema(path, at_rest).names)
            select = ", ".join(f'"{c}"' for c in columns if c in present) or "NULL AS nothing"
        else:
            select = "*"
        reader = cursor.execute(f"SELECT {select} FROM read_parquet({_sql_path(path)}, {_READ})").to_arrow_reader(
            batch_size
        )
        yield from reader
    finally:
        cursor.close()


def read_parquet_table(path: Path, at_rest: AtRest | None, columns: list[str] | None = None) -> pa.Table:
    batches = list(iter_parquet(path, at_rest, columns))
    if batches:
        return pa.Table.from_batches(batches)
    schema = parquet_schema(path, at_rest)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    return schema.empty_table()


def read_quarantine(path: Path, at_rest: AtRest | None) -> list[dict[str, Any]]:
    """The rows of one quarantine file (JSON lines or Parquet)."""
    if path.suffix == ".parquet":
        return read_parquet_table(path, at_rest).to_pylist()
    rows = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                rows.append(
                    {"line": None, "reason": "unreadable quarantine line", "raw": line.decode("utf-8", "replace")}
                )
    return rows
