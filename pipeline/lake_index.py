"""The lake's id index: which lake and quarantine files hold a customer (docs/privacy.md "Erasure").

An erasure must find the files that hold a customer without reading the lake: its cost follows
those files, not the lake's size. `$SENDTIME_HOME/erasure/lake_index.sqlite` maps the keyed hash
(pipeline/erasure_register.py; its first 8 bytes) of every identifier a file holds (customer_id,
anonymous_id, order_id, email: pipeline/erasure_rules.py) to the file. It holds no id in a
readable form.

Each cycle indexes the files that arrived since the last one (`catch_up`: a listing of the lake,
then only the new or changed files are read, their identifier columns only), whoever wrote them:
`sendtime ingest`, the collector, `sendtime consume`, a restore. The index is derived data: deleted,
it is rebuilt by the next cycle (from the whole lake, once). Entries of a file that no longer holds
an id are harmless (the erasure reads the file and finds nothing), so a crash between a file's
rewrite and its index update loses nothing.

While indexing, `catch_up` also checks new files against the register: a record of an erased
customer from at or before the erasure (a restored or replayed file, which ingest never saw)
schedules that customer's erasure again; a later record of a customer deleted in the CRM needs the
CRM delete kept in force (pipeline/erasure.py writes a tombstone).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Settings
from pipeline.encryption import AtRest, at_rest
from pipeline.erasure_register import Hasher, Snapshot
from pipeline.erasure_rules import (
    IDENTIFIERS,
    TOMBSTONE_SOURCE,
    HashLookup,
    erasable,
    identifier_values,
    raw_erasable,
    raw_identifiers,
)
from pipeline.lake_writer import iter_parquet, read_quarantine

INDEX = "lake_index.sqlite"
_BATCH = 50_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,      -- relative to the home
    area TEXT NOT NULL,             -- lake | quarantine
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ids (
    h INTEGER NOT NULL,             -- first 8 bytes of the keyed hash, signed
    file_id INTEGER NOT NULL,
    PRIMARY KEY (h, file_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ids_by_file ON ids (file_id);
"""


@dataclass(frozen=True)
class DataFile:
    path: Path
    area: str  # lake | quarantine
    source: str


@dataclass
class CatchUp:
    """What the newly indexed files told: customers to erase again, CRM deletes to keep in force."""

    indexed: int = 0
    reappeared: set[str] = field(default_factory=set)  # customer hashes with erasable records again
    tombstones: dict[str, int] = field(default_factory=dict)  # customer id -> CRM delete time (ms)


def data_files(settings: Settings) -> list[DataFile]:
    """Every lake and quarantine file (temporary `.` files being written are not data yet)."""
    out = []
    for area, root, suffixes in (
        ("lake", settings.lake_dir, (".parquet",)),
        ("quarantine", settings.quarantine_dir, (".parquet", ".jsonl")),
    ):
        if not root.is_dir():
            continue
        for source_dir in os.scandir(root):
            if not source_dir.is_dir():
                continue
            for part in os.scandir(source_dir.path):
                if not part.is_dir() or not part.name.startswith("ingest_date="):
                    continue
                for entry in os.scandir(part.path):
                    if entry.name.startswith(".") or not entry.name.endswith(suffixes) or not entry.is_file():
                        continue
                    out.append(DataFile(Path(entry.path), area, source_dir.name))
    return out


class LakeIndex:
    def __init__(self, settings: Settings, hasher: Hasher) -> None:
        self.settings = settings
        self.hasher = hasher
        self.path = settings.erasure_dir / INDEX
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.executescript(_SCHEMA)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LakeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.settings.home)

    # -- lookups -------------------------------------------------------------------------------
    def files_for(self, hashes: Iterable[str]) -> list[DataFile]:
        """The files whose identifiers include one of `hashes` (hex keyed hashes)."""
        keys = sorted({Hasher.index_key(h) for h in hashes})
        found: dict[str, DataFile] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self.con.execute(
                f"SELECT DISTINCT f.path, f.area, f.source FROM ids i JOIN files f USING (file_id) "
                f"WHERE i.h IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for path, area, source in rows:
                found[path] = DataFile(self.settings.home / path, area, source)
        return [found[p] for p in sorted(found)]

    # -- maintenance -----------------------------------------------------------------------------
    def catch_up(self, snapshot: Snapshot | None = None, lookup: HashLookup | None = None) -> CatchUp:
        """Index the files that are new or changed since the last call, forget removed ones; with
        the register's `snapshot`, report what the new files hold of erased customers."""
        key = at_rest(self.settings)
        known = {
            path: (fid, size, mtime)
            for fid, path, size, mtime in self.con.execute("SELECT file_id, path, size, mtime_ns FROM files")
        }
        result = CatchUp()
        present = set()
        for data in data_files(self.settings):
            rel = self._rel(data.path)
            present.add(rel)
            try:
                st = data.path.stat()
            except FileNotFoundError:
                continue  # removed while we listed (an erasure emptied it)
            seen = known.get(rel)
            if seen is not None and seen[1] == st.st_size and seen[2] == st.st_mtime_ns:
                continue
            self.index_file(data, key, snapshot, lookup, result)
            result.indexed += 1
        gone = [fid for path, (fid, _s, _m) in known.items() if path not in present]
        if gone:
            self._drop(gone)
        return result

    def _drop(self, file_ids: list[int]) -> None:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            for fid in file_ids:
                self.con.execute("DELETE FROM ids WHERE file_id = ?", (fid,))
                self.con.execute("DELETE FROM files WHERE file_id = ?", (fid,))
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def forget(self, path: Path) -> None:
        row = self.con.execute("SELECT file_id FROM files WHERE path = ?", (self._rel(path),)).fetchone()
        if row:
            self._drop([row[0]])

    def index_file(
        self,
        data: DataFile,
        key: AtRest | None,
        snapshot: Snapshot | None = None,
        lookup: HashLookup | None = None,
        result: CatchUp | None = None,
    ) -> None:
        """(Re)index one file: its identifiers' hashes replace whatever the index held for it."""
        try:
            st = data.path.stat()
        except FileNotFoundError:
            self.forget(data.path)
            return
        pairs = list(self._identifiers(data, key, snapshot, lookup, result))
        hashes = {Hasher.index_key(self.hasher.hex(kind, value)) for kind, value in pairs}
        rel = self._rel(data.path)
        self.con.execute("BEGIN IMMEDIATE")
        try:
            row = self.con.execute("SELECT file_id FROM files WHERE path = ?", (rel,)).fetchone()
            if row:
                fid = row[0]
                self.con.execute("DELETE FROM ids WHERE file_id = ?", (fid,))
                self.con.execute(
                    "UPDATE files SET size = ?, mtime_ns = ? WHERE file_id = ?", (st.st_size, st.st_mtime_ns, fid)
                )
            else:
                fid = self.con.execute(
                    "INSERT INTO files (path, area, source, size, mtime_ns) VALUES (?, ?, ?, ?, ?)",
                    (rel, data.area, data.source, st.st_size, st.st_mtime_ns),
                ).lastrowid
            ordered = sorted(hashes)
            for start in range(0, len(ordered), _BATCH):
                self.con.executemany(
                    "INSERT OR IGNORE INTO ids (h, file_id) VALUES (?, ?)",
                    [(h, fid) for h in ordered[start : start + _BATCH]],
                )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def _identifiers(
        self,
        data: DataFile,
        key: AtRest | None,
        snapshot: Snapshot | None,
        lookup: HashLookup | None,
        result: CatchUp | None,
    ) -> Iterable[tuple[str, str]]:
        if data.area == "quarantine":
            for row in read_quarantine(data.path, key):
                found, _when, _has_customer = raw_identifiers(row.get("raw"))
                yield from found
                if lookup is not None and result is not None and raw_erasable(row.get("raw"), lookup):
                    for kind, value in found:
                        owner = snapshot.owner.get((kind, lookup.hasher.hex(kind, value))) if snapshot else None
                        if owner:
                            result.reappeared.add(owner)
            return
        columns = list(IDENTIFIERS.get(data.source, ()))
        if not columns:
            return
        extra = {"events": ["occurred_at"], "customers": ["ts_ms"], "orders": ["ts_ms"], "order_items": ["ts_ms"]}
        wanted = columns + extra.get(data.source, []) + ["_source_file"]
        for batch in iter_parquet(data.path, key, wanted, batch_size=256 * 1024):
            table = pa.Table.from_batches([batch])
            for kind, values in identifier_values(data.source, table):
                yield from ((kind, v) for v in values)
            if lookup is not None and result is not None and snapshot is not None:
                self._check(data.source, table, snapshot, lookup, result)

    @staticmethod
    def _check(source: str, table: pa.Table, snapshot: Snapshot, lookup: HashLookup, result: CatchUp) -> None:
        mask = erasable(source, table, lookup, spare_tombstones=True)
        if pc.any(mask).as_py():
            hits = table.filter(mask)
            for kind in IDENTIFIERS[source]:
                if kind not in hits.column_names:
                    continue
                for value in pc.unique(hits.column(kind)).to_pylist():
                    if value is not None:
                        owner = snapshot.owner.get((kind, lookup.hasher.hex(kind, value)))
                        if owner:
                            result.reappeared.add(owner)
        if not snapshot.crm_deletes or "customer_id" not in table.column_names:
            return
        # later records of a customer deleted in the CRM: the delete must stay in force
        kept = table.filter(pc.invert(mask)) if pc.any(mask).as_py() else table
        if "_source_file" in kept.column_names:
            kept = kept.filter(pc.not_equal(pc.fill_null(kept.column("_source_file"), ""), TOMBSTONE_SOURCE))
        for value in pc.unique(kept.column("customer_id")).to_pylist():
            if value is None:
                continue
            h = lookup.hasher.hex("customer_id", value)
            deleted_at = snapshot.crm_deletes.get(h)
            # after its erasure only: until then the CRM delete itself is still in the lake
            if (
                deleted_at is not None
                and snapshot.done.get(h, -1) >= deleted_at
                and snapshot.tombstones.get(h, -1) < deleted_at
            ):
                result.tombstones[value] = max(deleted_at, result.tombstones.get(value, deleted_at))
