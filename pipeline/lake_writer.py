"""Atomic writers for one batch's lake file and quarantine file.

Both write `.<name>.tmp` in the final folder, fsync, then `os.replace`: a reader of the lake sees a
whole file or none. `abort()` removes the temporary file, so a failed batch leaves nothing visible.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq


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


class LakeFileWriter:
    """Streams accepted record batches into one Parquet file, created on the first rows only."""

    def __init__(self, final: Path, schema: pa.Schema) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp")
        self.schema = schema
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self._writer.write_table(table.cast(self.schema), row_group_size=128 * 1024)
        self.rows += table.num_rows

    def commit(self) -> Path | None:
        """Rename into place; None when no row was written (no file)."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
            self._writer = None
        _remove(self.tmp)


class QuarantineWriter:
    """One JSON object per rejected record: line, reason, raw, source_file."""

    def __init__(self, final: Path, *, create_empty: bool = True) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp")
        self.rows = 0
        self.create_empty = create_empty
        self._fh: Any = open(self.tmp, "wb") if create_empty else None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._fh is None:
            self._fh = open(self.tmp, "wb")
        self._fh.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        self.rows += len(rows)

    def commit(self) -> Path | None:
        if self._fh is None:
            return None
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
        _remove(self.tmp)
