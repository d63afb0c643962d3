"""Ingest: validate source records in bulk, append accepted ones to the lake, quarantine the rest.

Every input becomes chunks of `(line, raw JSON text)`; one DuckDB query per chunk checks the source
contract (`pipeline.contracts.validation_sql`) and yields the lake columns; accepted rows stream into
one Parquet file per batch, rejected rows into one quarantine JSONL file per batch. Nothing is held
in memory beyond a chunk (except a `.json` array file, which is parsed whole), so big files stream
in bounded memory. received = accepted + rejected, always: blank lines are not records.

Re-ingesting a file writes a second batch with the same records: deduplication (event_id, CDC
ordering) happens downstream in staging, which is what makes a re-ingest change no mart.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.clock import utcnow
from pipeline.config import Settings
from pipeline.contracts import CONTRACTS, MACROS, lake_schema, validation_sql
from pipeline.encryption import at_rest
from pipeline.erasure_register import Snapshot, register_for
from pipeline.erasure_rules import HashLookup, erasable, raw_erasable
from pipeline.errors import IngestError
from pipeline.ids import new_batch_id
from pipeline.lake_writer import LakeFileWriter, QuarantineWriter
from pipeline.logs import get_logger
from pipeline.timestamps import WHITESPACE

log = get_logger(__name__)

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
BLOCK_BYTES = 8 * 1024 * 1024  # text read per chunk: bounds memory, amortizes one query per chunk
PARQUET_BATCH_ROWS = 65_536
SNIFF_BYTES = 8192  # how much of a text file must look like text
# a record of an erased customer (the erasure register) that arrives again: re-ingested, replayed,
# restored. Counted as rejected, its quarantine row keeps this reason and the line, never the record
ERASED = "erased: the customer's erasure covers this record (docs/privacy.md)"


# --- reports ---------------------------------------------------------------------------------


@dataclass
class FileCounts:
    file: str
    path: str
    received: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass
class IngestReport:
    source: str
    batch_id: str
    received: int
    accepted: int
    rejected: int
    quarantine_path: str
    lake_file: str | None
    files: list[FileCounts]
    seconds: float
    ingested_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = self.lake_file or "no lake file (nothing accepted)"
        text = (
            f"{self.source}: batch {self.batch_id}: received {self.received}, accepted {self.accepted}, "
            f"rejected {self.rejected} in {self.seconds:.2f}s\n  lake: {where}"
        )
        if self.rejected:
            text += f"\n  quarantine: {self.quarantine_path}"
        return text


@dataclass
class RecordsReport:
    source: str
    batch_id: str
    received: int
    accepted: int
    duplicates: int
    rejected: int
    quarantine_path: str | None
    lake_file: str | None
    results: list[dict[str, Any]]
    seconds: float
    ingested_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- chunks of (line, raw) -------------------------------------------------------------------


@dataclass
class Chunk:
    lines: pa.Array  # int64, 1-based line / row number
    raw: pa.Array  # string: the record as JSON text
    csv: bool = False
    forced_reason: str | None = None
    pre_rejected: list[dict[str, Any]] = field(default_factory=list)  # rejected before SQL (bad UTF-8, bad CSV row)


def _looks_binary(head: bytes) -> bool:
    """Binary garbage, not text with a stray bad byte: any NUL, or many bytes that are not UTF-8."""
    if b"\x00" in head:
        return True
    undecodable = head[:-3].decode("utf-8", errors="replace").count("\ufffd")  # a cut character is fine
    return undecodable > max(4, len(head) // 50)


def _check_text(name: str, head: bytes) -> None:
    if _looks_binary(head[:SNIFF_BYTES]):
        raise IngestError(f"{name}: not a text file (binary content)")


def _lines_chunk(body: bytes, first_line: int) -> Chunk:
    """`body` holds whole lines, each ending with b'\\n'. Vectorised split: no Python per line."""
    data = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    n = len(ends)
    lines = np.arange(first_line, first_line + n, dtype=np.int64)
    binary = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    pre: list[dict[str, Any]] = []
    try:
        text = binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        # some line is not UTF-8: find it in Python (rare), reject it, keep its neighbours
        good, keep = [], np.ones(n, dtype=bool)
        for i, piece in enumerate(body.split(b"\n")[:n]):
            try:
                good.append(piece.decode("utf-8"))
            except UnicodeDecodeError:
                keep[i] = False
                pre.append(
                    {
                        "line": int(lines[i]),
                        "reason": "invalid UTF-8",
                        "raw": piece.rstrip(b"\r").decode("utf-8", "replace"),
                    }
                )
        text = pa.array(good, pa.large_string())
        lines = lines[keep]
    text = pc.utf8_rtrim(text, characters="\r\n")
    nonblank = pc.greater(pc.utf8_length(pc.utf8_trim(text, characters=WHITESPACE)), 0)
    return Chunk(pa.array(lines).filter(nonblank), text.filter(nonblank).cast(pa.string()), pre_rejected=pre)


def _read_jsonl(path: Path, name: str, head: bytes = b"") -> Iterator[Chunk]:
    with open(path, "rb") as fh:
        carry = b""
        line_no = 1
        first = True
        while True:
            data = fh.read(BLOCK_BYTES)
            if not data:
                break
            buf = carry + data if carry else data
            if first:
                _check_text(name, buf)
                if buf.startswith(b"\xef\xbb\xbf"):
                    buf = buf[3:]
                first = False
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            body, carry = buf[: cut + 1], buf[cut + 1 :]
            chunk = _lines_chunk(body, line_no)
            line_no += body.count(b"\n")
            yield chunk
        if carry:
            yield _lines_chunk(carry + b"\n", line_no)


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        # integers beyond 64 bits and other values orjson refuses
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _records_chunk(records: list[Any], first_line: int = 1, lines: list[int] | None = None) -> Chunk:
    raws = [_json_text(r) for r in records]
    numbers = (
        np.asarray(lines, dtype=np.int64)
        if lines is not None
        else np.arange(first_line, first_line + len(raws), dtype=np.int64)
    )
    return Chunk(pa.array(numbers), pa.array(raws, pa.string()))


def _read_json(path: Path, name: str) -> Iterator[Chunk]:
    """A `.json` file is one JSON array of records, or one object per line (then read as JSONL)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    _check_text(name, head)
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        yield from _read_jsonl(path, name)
        return
    data = path.read_bytes()  # an array has to be parsed whole; big inputs belong in JSONL
    try:
        records = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            records = json.loads(data.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IngestError(f"{name}: malformed JSON array: {exc}") from None
    for start in range(0, len(records), PARQUET_BATCH_ROWS):
        yield _records_chunk(records[start : start + PARQUET_BATCH_ROWS], start + 1)


def _required_columns(source: str) -> list[str]:
    contract = CONTRACTS[source]
    return ["op", "ts_ms"] if contract.cdc else [f.name for f in contract.fields if f.required]


def _to_json_rows(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """Each row of an Arrow batch as one JSON object text (DuckDB to_json: vectorised)."""
    con.register("_rows", batch)
    try:
        return con.sql("SELECT to_json(r)::VARCHAR AS raw FROM _rows r").to_arrow_table().column("raw").combine_chunks()
    finally:
        con.unregister("_rows")


def _read_csv(path: Path, name: str, source: str, con: duckdb.DuckDBPyConnection) -> Iterator[Chunk]:
    """Rows of a CSV file; `line` is the row's physical line in the file (the header is line 1)."""
    with open(path, "rb") as fh:
        head = fh.read(1024 * 1024)
    _check_text(name, head)
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip():
        return  # an empty CSV file: a batch of 0 records
    header = next(csv.reader(io.StringIO(text.splitlines()[0])))
    names = [h.strip(WHITESPACE) for h in header]
    missing = [c for c in _required_columns(source) if c not in names]
    forced = None
    if missing:
        forced = f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"

    invalid: list[int] = []  # physical line numbers the parser rejected or skipped (blank lines)
    bad_rows: list[dict[str, Any]] = []

    def on_invalid(row: Any) -> str:
        invalid.append(row.number)
        if row.text.strip(WHITESPACE):
            bad_rows.append(
                {
                    "line": row.number,
                    "raw": row.text,
                    "reason": f"malformed CSV row: expected {row.expected_columns} columns, got {row.actual_columns}",
                }
            )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False, column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        seen = 0
        for batch in reader:
            done = sorted(invalid)
            # the k-th valid row sits on the k-th line (from 2) that the parser did not reject
            idx = np.arange(seen, seen + batch.num_rows, dtype=np.int64)
            lines = idx + 2
            if done:
                bad = np.asarray(done, dtype=np.int64)
                while True:
                    nxt = idx + 2 + np.searchsorted(bad, lines, side="right")
                    if np.array_equal(nxt, lines):
                        break
                    lines = nxt
            seen += batch.num_rows
            pre = sorted(bad_rows, key=lambda r: r["line"])
            bad_rows.clear()
            # a row whose every cell is blank is a blank line, not a record (as in JSONL)
            blank = None
            for column in batch.columns:
                empty = pc.equal(pc.utf8_length(pc.utf8_trim(column, characters=WHITESPACE)), 0)
                blank = empty if blank is None else pc.and_(blank, empty)
            raw = _to_json_rows(con, batch)
            lines_arr = pa.array(lines)
            if blank is not None and pc.any(blank).as_py():
                keep = pc.invert(blank)
                raw, lines_arr = raw.filter(keep), lines_arr.filter(keep)
            yield Chunk(lines_arr, raw, csv=True, forced_reason=forced, pre_rejected=pre)
        if bad_rows:
            yield Chunk(
                pa.array([], pa.int64()),
                pa.array([], pa.string()),
                csv=True,
                pre_rejected=sorted(bad_rows, key=lambda r: r["line"]),
            )
    except pa.ArrowInvalid as exc:
        raise IngestError(f"{name}: unreadable CSV: {str(exc).splitlines()[0]}") from None


def _open_parquet(path: Path, name: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{name}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None


def _read_parquet(path: Path, name: str, con: duckdb.DuckDBPyConnection) -> Iterator[Chunk]:
    pf = _open_parquet(path, name)
    row = 1
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield Chunk(pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64)), _to_json_rows(con, batch))
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{name}: corrupt Parquet file: {str(exc).splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise IngestError(f"{name}: cannot read Parquet rows: {str(exc).splitlines()[0]}") from None


# --- validation ------------------------------------------------------------------------------


class Validator:
    """One DuckDB connection (single thread: ingest uses one core) and the prepared queries.
    `ingested_at` is the batch's ingestion time: the contracts' "not too far in the future"
    bound counts from it, never from the clock or time zone of the DuckDB session.

    Every writer of the lake validates through it (files, the collector, Kafka), so it is also where
    the erasure register applies (`settings`' home): a record of an erased customer, from at or
    before the erasure, is not accepted again (pipeline/erasure_rules.py); it is rejected with the
    reason `ERASED` and its raw text withheld from the quarantine."""

    def __init__(self, source: str, ingested_at: datetime, *, settings: Settings) -> None:
        self.source = source
        self.ingested_at = ingested_at
        self.cdc = CONTRACTS[source].cdc
        self.con = duckdb.connect(config={"threads": 1, "memory_limit": "256MB"})
        # DuckDB's in_clause optimizer turns each IN (...) list of the validation query (character
        # classes of the timestamp macros, enums) into a mark join: planning those cost ~0.15 s per
        # query, whatever the rows (a collector request of 25 events took 0.2 s, 0.07 s without),
        # and the joins ran slower than the plain IN expressions on 100k rows too (2.1 s vs 1.3 s)
        self.con.execute("SET disabled_optimizers = 'in_clause'")
        self.con.execute(MACROS)
        self.columns = CONTRACTS[source].columns
        self.register = register_for(settings)
        self._lookup: tuple[Snapshot, HashLookup] | None = None

    def close(self) -> None:
        self.con.close()

    def run(self, chunk: Chunk) -> tuple[pa.Table, list[dict[str, Any]]]:
        """-> (accepted: line, raw + lake source columns; rejected: [{line, reason, raw}] by line)."""
        rejected = list(chunk.pre_rejected)
        if len(chunk.lines) == 0:
            empty = pa.table(
                {
                    "line": pa.array([], pa.int64()),
                    "raw": pa.array([], pa.string()),
                    **{c: pa.array([], lake_schema(self.source).field(c).type) for c in self.columns},
                }
            )
            return empty, rejected
        self.con.register("chunk", pa.table({"line": chunk.lines, "raw": chunk.raw}))
        try:
            sql = validation_sql(
                self.source, ingested_at=self.ingested_at, csv=chunk.csv, forced_reason=chunk.forced_reason
            )
            result = self.con.sql(sql).to_arrow_table()
        finally:
            self.con.unregister("chunk")
        ok = pc.is_null(result.column("reason"))
        accepted = result.filter(ok).drop_columns(["reason"])
        bad = result.filter(pc.invert(ok)).select(["line", "reason", "raw"])
        if self.cdc and accepted.num_rows:
            accepted, more = _canonical_rows(accepted)
            bad_rows = bad.to_pylist() + more
        else:
            bad_rows = bad.to_pylist()
        for r in bad_rows:
            if r["reason"] == "malformed JSON":
                r["reason"] = _json_error(r["raw"])
        rejected.extend(bad_rows)
        accepted = self._erase(accepted, rejected)
        rejected.sort(key=lambda r: r["line"])
        return accepted, rejected

    def lookup(self) -> HashLookup | None:
        """The register's hashes (None while nothing was ever erased: no cost at all)."""
        snapshot = self.register.snapshot()
        if snapshot.empty:
            return None
        if self._lookup is None or self._lookup[0] is not snapshot:
            self._lookup = (snapshot, HashLookup(snapshot, self.register.hasher))
        return self._lookup[1]

    def _erase(self, accepted: pa.Table, rejected: list[dict[str, Any]]) -> pa.Table:
        """Apply the erasure register: erased accepted rows move to `rejected` without their raw
        text; an erased customer's rejected row loses its raw text too."""
        lookup = self.lookup()
        if lookup is None:
            return accepted
        for r in rejected:
            if r.get("raw") is not None and raw_erasable(r["raw"], lookup):
                r["raw"], r["reason"] = None, ERASED
        if accepted.num_rows == 0:
            return accepted
        mask = erasable(self.source, accepted, lookup)
        if not pc.any(mask).as_py():
            return accepted
        for line in accepted.filter(mask).column("line").to_pylist():
            rejected.append({"line": line, "reason": ERASED, "raw": None})
        return accepted.filter(pc.invert(mask))


def _json_error(raw: str) -> str:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    return "malformed JSON"


def _canonical(text: str) -> str:
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_rows(table: pa.Table) -> tuple[pa.Table, list[dict[str, Any]]]:
    """CDC `row_json` with sorted keys and no spaces: the identity of "the same row" downstream."""
    out: list[str | None] = []
    failed: list[dict[str, Any]] = []
    keep = np.ones(table.num_rows, dtype=bool)
    for i, text in enumerate(table.column("row_json").to_pylist()):
        try:
            out.append(_canonical(text))
        except ValueError as exc:
            keep[i] = False
            out.append(None)
            failed.append(
                {
                    "line": table.column("line")[i].as_py(),
                    "raw": table.column("raw")[i].as_py(),
                    "reason": f"malformed JSON: {exc}",
                }
            )
    idx = table.schema.get_field_index("row_json")
    table = table.set_column(idx, "row_json", pa.array(out, pa.string()))
    return (table.filter(pa.array(keep)) if failed else table), failed


def _lake_table(accepted: pa.Table, source: str, batch_id: str, ingested_at: datetime, source_file: str) -> pa.Table:
    n = accepted.num_rows
    schema = lake_schema(source)
    cols = [accepted.column(c) for c in CONTRACTS[source].columns]
    cols += [
        pa.nulls(n, pa.string()).fill_null(batch_id),
        pa.nulls(n, pa.timestamp("us")).fill_null(pa.scalar(ingested_at, pa.timestamp("us"))),
        pa.nulls(n, pa.string()).fill_null(source_file),
        accepted.column("line"),
        accepted.column("raw"),
    ]
    return pa.Table.from_arrays(
        [c.cast(f.type) if c.type != f.type else c for c, f in zip(cols, schema)], schema=schema
    )


# --- batches ---------------------------------------------------------------------------------


@dataclass
class _Batch:
    source: str
    batch_id: str
    ingested_at: datetime
    lake: LakeFileWriter
    quarantine: QuarantineWriter

    def abort(self) -> None:
        self.lake.abort()
        self.quarantine.abort()


def _open_batch(settings: Settings, source: str, *, quarantine_always: bool) -> _Batch:
    if source not in CONTRACTS:
        raise IngestError(f"unknown source {source!r} (one of {', '.join(CONTRACTS)})")
    ingested_at = utcnow()
    batch_id = new_batch_id(ingested_at)
    part = f"ingest_date={ingested_at:%Y-%m-%d}"
    lake_dir = settings.lake_dir / source / part
    quarantine_dir = settings.quarantine_dir / source / part
    for kind, folder in (("lake", lake_dir), ("quarantine", quarantine_dir)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"cannot write the {kind} directory {folder}: {exc.strerror or exc}") from None
        if not os.access(folder, os.W_OK):
            raise IngestError(f"cannot write the {kind} directory {folder}: permission denied")
    key = at_rest(settings)  # a wrong or missing key is an error here, before anything is written
    try:
        quarantine = QuarantineWriter(quarantine_dir / f"{batch_id}.jsonl", create_empty=quarantine_always, at_rest=key)
    except OSError as exc:
        raise IngestError(f"cannot write the quarantine directory {quarantine_dir}: {exc.strerror or exc}") from None
    lake = LakeFileWriter(lake_dir / f"{batch_id}.parquet", lake_schema(source), at_rest=key)
    return _Batch(source, batch_id, ingested_at, lake, quarantine)


def _check_file(path: Path) -> str:
    """Fail before writing anything when a file cannot be ingested at all."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IngestError(f"{path}: no such file") from None
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise IngestError(f"{path}: cannot read: is a directory")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO or device would block or never end: only regular files are ingested
        raise IngestError(f"{path}: cannot read: not a regular file")
    if path.suffix.lower() not in EXTENSIONS:
        raise IngestError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (use {', '.join(EXTENSIONS)})")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".parquet":
        if st.st_size == 0:
            raise IngestError(f"{path}: not a readable Parquet file: the file is empty (0 bytes)")
        _open_parquet(path, str(path))
    return path.name


def _chunks(path: Path, source: str, con: duckdb.DuckDBPyConnection) -> Iterator[Chunk]:
    suffix = path.suffix.lower()
    name = str(path)  # for error messages; the lake's _source_file is the basename
    if suffix == ".jsonl":
        return _read_jsonl(path, name)
    if suffix == ".json":
        return _read_json(path, name)
    if suffix == ".csv":
        return _read_csv(path, name, source, con)
    return _read_parquet(path, name, con)


def _write_chunk(batch: _Batch, validator: Validator, chunk: Chunk, source_file: str) -> tuple[int, int]:
    accepted, rejected = validator.run(chunk)
    batch.lake.write(_lake_table(accepted, batch.source, batch.batch_id, batch.ingested_at, source_file))
    for r in rejected:
        r["source_file"] = source_file
    batch.quarantine.write(rejected)
    return accepted.num_rows, len(rejected)


def ingest_files(settings: Settings, source: str, paths: list[Path]) -> IngestReport:
    """One batch: every accepted record of `paths` into one lake file, every rejected one into quarantine."""
    started = time.perf_counter()
    if source not in CONTRACTS:
        raise IngestError(f"unknown source {source!r} (one of {', '.join(CONTRACTS)})")
    if not paths:
        raise IngestError("no files given")
    paths = [Path(p) for p in paths]
    names = [_check_file(p) for p in paths]
    batch = _open_batch(settings, source, quarantine_always=True)
    validator = Validator(source, batch.ingested_at, settings=settings)
    files: list[FileCounts] = []
    try:
        for path, name in zip(paths, names):
            counts = FileCounts(file=name, path=str(path))
            try:
                for chunk in _chunks(path, source, validator.con):
                    acc, rej = _write_chunk(batch, validator, chunk, name)
                    counts.accepted += acc
                    counts.rejected += rej
            except OSError as exc:
                raise IngestError(f"{_where(exc, path, batch)}: {exc.strerror or exc}") from None
            except (duckdb.Error, pa.ArrowException) as exc:
                # unexpected content the readers did not classify: still one line, still no partial batch
                raise IngestError(f"{path}: cannot ingest: {str(exc).splitlines()[0]}") from None
            counts.received = counts.accepted + counts.rejected
            files.append(counts)
        try:
            quarantine_path = batch.quarantine.commit()
            lake_file = batch.lake.commit()
        except OSError as exc:
            if batch.quarantine.final.exists():
                batch.quarantine.final.unlink()
            raise IngestError(f"cannot write the lake file {batch.lake.final}: {exc.strerror or exc}") from None
    except BaseException:
        batch.abort()
        raise
    finally:
        validator.close()
    accepted = sum(f.accepted for f in files)
    rejected = sum(f.rejected for f in files)
    report = IngestReport(
        source=source,
        batch_id=batch.batch_id,
        received=accepted + rejected,
        accepted=accepted,
        rejected=rejected,
        quarantine_path=str(quarantine_path),
        lake_file=str(lake_file) if lake_file else None,
        files=files,
        seconds=round(time.perf_counter() - started, 3),
        ingested_at=batch.ingested_at.isoformat() + "Z",
    )
    log.info(
        "ingested batch",
        extra={
            "source": source,
            "batch_id": batch.batch_id,
            "received": report.received,
            "accepted": accepted,
            "rejected": rejected,
            "seconds": report.seconds,
        },
    )
    return report


def _where(exc: OSError, path: Path, batch: _Batch) -> str:
    """Name what failed: the input file, or the lake/quarantine file being written."""
    failed = getattr(exc, "filename", None)
    if failed and str(failed) in (str(batch.lake.tmp), str(batch.quarantine.tmp)):
        return f"cannot write {failed}"
    return f"{path}: cannot read"


def ingest_records(
    settings: Settings,
    source: str,
    records: list[Any],
    *,
    source_file: str = "collector",
    known: Callable[[list[str]], Iterable[str]] | None = None,
    id_max_length: int | None = None,
    lines: list[int] | None = None,
    pre_rejected: list[dict[str, Any]] | None = None,
) -> RecordsReport:
    """The collector's path: validate parsed records like a file; per-record results in input order.

    Events only: within a request the first accepted record of an event_id wins (the others are
    `duplicate`); `known(ids)` gets the accepted ids (first occurrence, in order) and returns those
    already landed by an earlier request: duplicates too, and not written again. An event_id
    longer than `id_max_length` characters is rejected (the collector's index cannot hold it).
    Nothing is claimed here: the caller records the landed ids after this returns, when the lake
    file is durable (serving/api/events.py), so an id is never recorded for an event the lake
    does not hold.

    `lines`: each record's 1-based position in what the caller received (default 1..n), the lake's
    `_source_line` and the quarantine's `line`. `pre_rejected`: records the caller rejected before
    the contract (a webhook's unknown event: `{"line", "reason", "raw"}`), quarantined in this batch
    and counted in `received` and `rejected` (not in `results`).
    """
    started = time.perf_counter()
    batch = _open_batch(settings, source, quarantine_always=False)
    validator = Validator(source, batch.ingested_at, settings=settings)
    records = list(records)
    if lines is not None and len(lines) != len(records):
        raise ValueError("lines: one line number per record")
    position = {line: i for i, line in enumerate(lines)} if lines is not None else None
    try:
        accepted, rejected = validator.run(_records_chunk(records, lines=lines))
        results: list[dict[str, Any]] = [
            {"index": i, "event_id": None, "status": "accepted"} for i in range(len(records))
        ]
        for r in rejected:
            r["source_file"] = source_file
        if source == "events":
            for i, rec in enumerate(records):
                if isinstance(rec, dict) and isinstance(rec.get("event_id"), str):
                    results[i]["event_id"] = rec["event_id"].strip(WHITESPACE) or None
            if id_max_length is not None:
                accepted, too_long = _reject_long_ids(accepted, id_max_length, source_file)
                rejected += too_long
            accepted = _drop_duplicates(accepted, results, known, position)
        for r in rejected:
            i = position[r["line"]] if position is not None else r["line"] - 1
            results[i]["status"] = "rejected"
            results[i]["reason"] = r["reason"]
        if pre_rejected:
            rejected = [*rejected, *({**r, "source_file": source_file} for r in pre_rejected)]
        batch.lake.write(_lake_table(accepted, source, batch.batch_id, batch.ingested_at, source_file))
        batch.quarantine.write(sorted(rejected, key=lambda r: r["line"]))
        quarantine_path = batch.quarantine.commit()
        lake_file = batch.lake.commit()
    except OSError as exc:
        batch.abort()
        raise IngestError(f"cannot write the lake: {exc.strerror or exc}") from None
    except BaseException:
        batch.abort()
        raise
    finally:
        validator.close()
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    extra = len(pre_rejected or ())
    return RecordsReport(
        source=source,
        batch_id=batch.batch_id,
        received=len(records) + extra,
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"] + extra,
        quarantine_path=str(quarantine_path) if quarantine_path else None,
        lake_file=str(lake_file) if lake_file else None,
        results=results,
        seconds=round(time.perf_counter() - started, 3),
        ingested_at=batch.ingested_at.isoformat() + "Z",
    )


def _reject_long_ids(accepted: pa.Table, limit: int, source_file: str) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Accepted events whose event_id is longer than `limit` characters, moved to the rejected."""
    lengths = pc.utf8_length(accepted.column("event_id"))
    too_long = pc.fill_null(pc.greater(lengths, limit), False)
    if not pc.any(too_long).as_py():
        return accepted, []
    out = accepted.filter(too_long)
    reason = f"event_id: longer than {limit} characters"
    rows = [
        {"line": line, "reason": reason, "raw": raw, "source_file": source_file}
        for line, raw in zip(out.column("line").to_pylist(), out.column("raw").to_pylist())
    ]
    return accepted.filter(pc.invert(too_long)), rows


def _drop_duplicates(
    accepted: pa.Table,
    results: list[dict[str, Any]],
    known: Callable[[list[str]], Iterable[str]] | None,
    position: dict[int, int] | None = None,
) -> pa.Table:
    """Within a request the first accepted event_id wins; `known` says which ids landed before.
    `position`: line -> index into `results`, when lines are not 1..n."""
    ids = accepted.column("event_id").to_pylist()
    lines = (
        [position[line] + 1 for line in accepted.column("line").to_pylist()]
        if position is not None
        else accepted.column("line").to_pylist()
    )
    first: dict[str, int] = {}
    keep = [False] * len(ids)
    for pos, (event_id, line) in enumerate(zip(ids, lines)):
        if event_id in first:
            results[line - 1]["status"] = "duplicate"
        else:
            first[event_id] = pos
            keep[pos] = True
    if known is not None and first:
        for event_id in set(known(list(first))) & set(first):
            pos = first[event_id]
            keep[pos] = False
            results[lines[pos] - 1]["status"] = "duplicate"
    return accepted.filter(pa.array(keep, pa.bool_()))
