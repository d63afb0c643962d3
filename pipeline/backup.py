"""`sendtime backup DIR` and `sendtime restore DIR`: a consistent copy of the whole home, taken while
the scheduler and the API run, and restorable into an empty home (docs/recovery.md, "Backup").

What a backup holds, and how each part is copied consistently:

1. Under the home's cycle lock (no cycle runs, so the warehouse file is closed and checkpointed and
   the published state is one version), for as short a time as the copies take:
   * the online store: SQLite through its online backup API (a snapshot, while the collector keeps
     writing); PostgreSQL: a snapshot is exported (`pg_export_snapshot()` in a repeatable-read
     transaction) and the lock is released at once; `pg_dump --snapshot` then dumps exactly that
     snapshot while cycles publish again;
   * every other file and folder of the home that is not append-only: the DuckDB warehouse (and a
     `.wal` a killed cycle left), a Spark warehouse, `sendtime.toml`, and any state a later feature
     keeps under the home (copied generically: nothing needs listing here).
2. After the lock: the append-only folders (`lake/`, `quarantine/`, `generated/`), whose files are
   written under a temporary name and renamed, never changed in place: hard links when DIR is on
   the same file system (free), else copies. Taken after the warehouse, the lake holds every batch
   the warehouse has read (and perhaps a few newer ones, which the restored home's next cycle reads).
3. `manifest.json`, written last (its presence marks a complete backup): every file with its size
   and sha256, the store's kind and published version, the time the lock was held.

Left out: `run/` (locks, pid files, metrics files), `dbt/` (dbt's target and logs, rebuilt by the
next cycle), `logs/`, hidden temporary files. `restore` verifies every checksum first, refuses a
home or a PostgreSQL database that is not empty, copies the files back, loads the store, and runs
the AFTER_RESTORE steps (the extension point for state that must be re-applied after a restore,
such as erasure requests made after the backup: docs/recovery.md).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from pipeline import store
from pipeline.clock import iso_z, utcnow
from pipeline.config import TOML_NAME, Settings
from pipeline.erasure_copies import remember_backup
from pipeline.erasure_register import hasher_for
from pipeline.errors import SendtimeError
from pipeline.logs import get_logger

log = get_logger("sendtime.backup")

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "online.sqlite"
PG_DUMP_FILE = "online.pgdump"
# top-level names of the home a backup leaves out: transient (locks, pids, metrics files), rebuilt
# by the next cycle (dbt's target and logs), or logs
SKIP = frozenset({"run", "dbt", "logs"})
# ... but the manifest of the last dbt build: the contract the warehouse was built with (reconcile
# reads it after a restore instead of parsing the project)
KEEP = ("dbt/target/manifest.json",)
# folders whose files are written once (temporary name, rename) and never changed in place
APPEND_ONLY = frozenset({"lake", "quarantine", "generated"})
# the SQLite store's own files: copied through the backup API, never as files
STORE_FILES = frozenset({SQLITE_FILE, SQLITE_FILE + "-wal", SQLITE_FILE + "-shm", SQLITE_FILE + "-journal"})
LOCK_WAIT_SECONDS = 600.0
_BLOCK = 1 << 20

# Steps run after a restore, in order, as "module:function" taking (settings, manifest dict with the
# backup's "directory"): state that must be re-applied after the data is back (erasures requested
# after the backup: docs/recovery.md "Erasures and restores").
AFTER_RESTORE: tuple[str, ...] = ("pipeline.erasure:after_restore",)


class BackupError(SendtimeError):
    """A backup or restore that cannot proceed (a non-empty target, a bad backup, ...)."""


@dataclass
class FileEntry:
    path: str  # relative to the home (and to DIR)
    size: int
    sha256: str
    how: str  # link, copy (under the lock: locked)


@dataclass
class Manifest:
    format: int
    created_at: str
    home: str
    store: dict[str, Any]
    lock_seconds: float = 0.0
    seconds: float = 0.0
    files: list[FileEntry] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> dict[str, Any]:
        by_how: dict[str, list[int]] = {}
        for f in self.files:
            by_how.setdefault(f.how, []).append(f.size)
        return {
            "created_at": self.created_at,
            "store": self.store,
            "lock_seconds": round(self.lock_seconds, 3),
            "seconds": round(self.seconds, 3),
            "files": len(self.files),
            "bytes": self.bytes,
            "by_how": {k: {"files": len(v), "bytes": sum(v)} for k, v in sorted(by_how.items())},
        }

    def summary_text(self) -> str:
        s = self.summary()
        parts = ", ".join(f"{v['files']} {k} ({v['bytes']} bytes)" for k, v in s["by_how"].items())
        return (
            f"backup of {self.home} at {self.created_at}: published version {self.store.get('published_version')}, "
            f"{s['files']} files, {s['bytes']} bytes ({parts}); store {self.store['kind']}; cycle lock held "
            f"{s['lock_seconds']:.2f}s, {s['seconds']:.2f}s in all"
        )

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "files": [asdict(f) for f in self.files]}, indent=1)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise BackupError(f"{folder} holds no complete backup (no {MANIFEST})")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise BackupError(f"{path}: backup format {data.get('format')!r}, this sendtime reads {FORMAT}")
        data["files"] = [FileEntry(**f) for f in data["files"]]
        return cls(**data)


# ------------------------------------------------------------------------------ files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def _visible(path: Path) -> bool:
    """Hidden files are temporary (`.<batch>.parquet.tmp`, `.write-probe`): never copied."""
    return not path.name.startswith(".")


def _files_under(root: Path, relative_to: Path) -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                out.append((Path(folder) / name).relative_to(relative_to))
    return out


def _place(source: Path, target: Path, link: bool) -> str:
    """Hard-link (append-only files, same file system) or copy `source` to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, target)
            return "link"
        except OSError:
            pass  # another file system, or links not allowed: copy
    shutil.copyfile(source, target)
    return "copy"


def _copy_tree(home: Path, names: list[str], out: Path, *, link: bool, how: str | None = None) -> list[FileEntry]:
    entries = []
    for name in names:
        root = home / name
        paths = [Path(name)] if root.is_file() else _files_under(root, home)
        for rel in paths:
            try:
                done = _place(home / rel, out / rel, link)
            except FileNotFoundError:
                continue  # removed while we walked (quarantine retention, an atomic rewrite): not state any more
            target = out / rel
            entries.append(FileEntry(str(rel), target.stat().st_size, _sha256(target), how or done))
    return entries


def _locked_names(settings: Settings) -> list[str]:
    """Entries copied under the cycle lock: every top-level one but the skipped, the append-only and
    the SQLite store's files; and the few kept files of skipped folders."""
    home = settings.home
    names = [p.name for p in home.iterdir() if _visible(p) and p.name not in SKIP | APPEND_ONLY | STORE_FILES]
    return sorted(names) + [k for k in KEEP if (home / k).is_file()]


# ------------------------------------------------------------------------------ stores


def _is_sqlite(settings: Settings) -> bool:
    return settings.store_url.startswith("sqlite")


def _sqlite_path(settings: Settings) -> Path:
    return Path(make_url(settings.store_url).database or "")


def _sqlite_backup(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy while other connections read and write."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # one step: the whole database from one read snapshot
    finally:
        dst.close()
        src.close()


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy URL -> a libpq connection string without the password, and the environment that
    carries the password (never on a command line, where `ps` shows it)."""
    parsed = make_url(url)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    conninfo = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return conninfo, env


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (the PostgreSQL client: apt-get install postgresql-client)")
    return found


class _PgSnapshot:
    """A repeatable-read transaction that exported its snapshot, kept open while pg_dump reads it."""

    def __init__(self, url: str) -> None:
        import psycopg

        conninfo, env = _libpq(url)
        self.conn = psycopg.connect(conninfo, password=env.get("PGPASSWORD"), autocommit=True)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self.id = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]

    def close(self) -> None:
        try:
            self.conn.execute("COMMIT")
        finally:
            self.conn.close()


def _pg_dump(url: str, snapshot: str, target: Path) -> None:
    conninfo, env = _libpq(url)
    proc = subprocess.run(
        [
            _pg_tool("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--snapshot={snapshot}",
            f"--file={target}",
            f"--dbname={conninfo}",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BackupError(f"pg_dump failed: {_last_line(proc)}")


def _last_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stderr.strip()
    return text.splitlines()[-1] if text else f"exit {proc.returncode}"


def _published(engine: Any) -> dict[str, Any]:
    version = store.current_version(engine) if store.has_schema(engine) else None
    return {
        "published_version": version["version"] if version else None,
        "published_cycle_id": version["cycle_id"] if version else None,
    }


# ------------------------------------------------------------------------------ backup


def _empty_target(out: Path, home: Path) -> None:
    out = out.absolute()
    if out == home or home in out.parents:
        raise BackupError(f"{out} is inside the home {home}: a backup goes elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)


def backup(settings: Settings, directory: Path, *, lock_wait: float = LOCK_WAIT_SECONDS) -> Manifest:
    """A consistent copy of the home in `directory` (a new or empty folder, outside the home)."""
    from pipeline.cycle import cycle_lock

    started = time.perf_counter()
    home = settings.home.absolute()
    out = Path(directory).absolute()
    _empty_target(out, home)
    # the register's key exists before it is copied, and every erasure requested from now on is
    # also written beside this backup (pipeline/erasure_copies.py): a restore applies it again
    hasher_for(settings)
    remember_backup(settings, out)
    manifest = Manifest(format=FORMAT, created_at=iso_z(utcnow()), home=str(home), store={})
    lock = cycle_lock(settings)
    if not lock.wait(lock_wait):
        raise BackupError(f"the cycle lock {lock.path} stayed taken for {lock_wait:.0f} s (pid {lock.holder_pid()})")
    locked_at = time.perf_counter()
    snapshot = None
    engine = store.engine_for(settings)
    try:
        manifest.store = {"kind": "sqlite" if _is_sqlite(settings) else "postgresql", **_published(engine)}
        if _is_sqlite(settings):
            path = _sqlite_path(settings)
            if path.exists():
                _sqlite_backup(path, out / SQLITE_FILE)
                manifest.store["file"] = SQLITE_FILE
        else:
            snapshot = _PgSnapshot(settings.store_url)
        manifest.files += _copy_tree(home, _locked_names(settings), out, link=False, how="locked")
    finally:
        lock.release()  # cycles go on: the PostgreSQL snapshot stays, the rest is append-only
        manifest.lock_seconds = time.perf_counter() - locked_at
        engine.dispose()
    try:
        if snapshot is not None:
            _pg_dump(settings.store_url, snapshot.id, out / PG_DUMP_FILE)
            manifest.store["file"] = PG_DUMP_FILE
    finally:
        if snapshot is not None:
            snapshot.close()
    store_file = manifest.store.get("file")
    if store_file:
        manifest.files.append(
            FileEntry(store_file, (out / store_file).stat().st_size, _sha256(out / store_file), "store")
        )
    present = [name for name in sorted(APPEND_ONLY) if (home / name).is_dir()]
    manifest.files += _copy_tree(home, present, out, link=True)
    manifest.seconds = time.perf_counter() - started
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.to_json())
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out / MANIFEST)
    log.info("backup written", extra={"directory": str(out), **manifest.summary()})
    return manifest


# ------------------------------------------------------------------------------ restore


def _home_is_empty(settings: Settings) -> None:
    home = settings.home
    if not home.exists():
        return
    kept = {TOML_NAME} | SKIP
    found = [p for p in home.iterdir() if _visible(p) and p.name not in kept and (p.is_file() or _files_under(p, home))]
    if found:
        raise BackupError(
            f"{home} is not empty ({', '.join(sorted(p.name for p in found))}): restore goes into an empty home"
        )


def _restore_store(settings: Settings, manifest: Manifest, folder: Path) -> None:
    kind = manifest.store["kind"]
    if kind != ("sqlite" if _is_sqlite(settings) else "postgresql"):
        raise BackupError(
            f"the backup holds a {kind} store; this home's online store is "
            f"{'SQLite' if _is_sqlite(settings) else 'PostgreSQL'}: set online_store_url to match"
        )
    store_file = manifest.store.get("file")
    if store_file is None:
        return  # nothing had been published when the backup was taken
    if kind == "sqlite":
        target = _sqlite_path(settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_backup(folder / store_file, target)
        return
    engine = store.engine_for(settings)
    try:
        if store.has_schema(engine):
            raise BackupError(
                "the PostgreSQL database of online_store_url already holds a sendtime store: "
                "restore goes into an empty database"
            )
    finally:
        engine.dispose()
    conninfo, env = _libpq(settings.store_url)
    proc = subprocess.run(
        [
            _pg_tool("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            f"--dbname={conninfo}",
            str(folder / store_file),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BackupError(f"pg_restore failed: {_last_line(proc)}")


def _after_restore(settings: Settings, manifest: Manifest, folder: Path) -> list[str]:
    done = []
    for target in AFTER_RESTORE:
        module, _, name = target.partition(":")
        step: Callable[[Settings, dict[str, Any]], None] = getattr(importlib.import_module(module), name)
        step(settings, {**asdict(manifest), "files": None, "directory": str(folder)})
        done.append(target)
    return done


def _intact(path: Path, entry: FileEntry) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and _sha256(path) == entry.sha256


def restore(settings: Settings, directory: Path) -> dict[str, Any]:
    """The backup in `directory` into this empty home (and its empty online store)."""
    folder = Path(directory).absolute()
    manifest = Manifest.read(folder)
    _home_is_empty(settings)
    bad = [f.path for f in manifest.files if not _intact(folder / f.path, f)]
    if bad:
        raise BackupError(f"the backup is damaged: {len(bad)} files missing or changed (e.g. {bad[0]})")
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    restored = 0
    for entry in manifest.files:
        if entry.how == "store":
            continue
        target = home / entry.path
        if entry.path == TOML_NAME and target.exists():
            continue  # this home's own settings win (its online_store_url is where the store goes)
        top = Path(entry.path).parts[0]
        _place(folder / entry.path, target, link=top in APPEND_ONLY)
        restored += 1
    _restore_store(settings, manifest, folder)
    steps = _after_restore(settings, manifest, folder)
    log.info("backup restored", extra={"directory": str(folder), "files": restored, "steps": steps})
    return {
        "created_at": manifest.created_at,
        "version": manifest.store.get("published_version"),
        "files": restored,
        "bytes": manifest.bytes,
        "store": manifest.store["kind"],
        "after_restore": steps,
    }
