"""Copies of the erasure register outside the home, so that an erasure requested after a backup
applies again after a restore (DESIGN.md "Consistency and recovery"; docs/recovery.md).

Every line appended to the register (pipeline/erasure_register.py) is appended, before the request
is acknowledged, to:

* `DIR/erasure-after-backup.jsonl` of every backup this home has written (`sendtime backup DIR`
  records DIR in `erasure/backups.json` before it copies anything): a restore from DIR finds there
  what the backup itself could not hold;
* `erasure_register_mirror/register.jsonl` when that setting names a directory (on other storage
  than the home: a backup that is moved away stops receiving lines; the mirror does not).

The lines hold keyed hashes and times only, like the register. A copy that cannot be written is
logged and skipped: the home's register stays the authority.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import orjson

from pipeline.config import Settings
from pipeline.logs import get_logger

log = get_logger(__name__)

AFTER_BACKUP = "erasure-after-backup.jsonl"
MIRROR_REGISTER = "register.jsonl"
MIRROR_KEY = "register.key"
BACKUPS = "backups.json"
# what a restore merges back: the requests and the identifiers found to be theirs. "done" lines are
# left out on purpose: the restored files hold the records again, so the erasure must run again.
MERGED_OPS = frozenset({"request", "scope"})


def remember_backup(settings: Settings, directory: Path) -> None:
    """Send later register lines to `directory` too (called by `sendtime backup` before it copies)."""
    path = settings.erasure_dir / BACKUPS
    known = _backups(settings)
    folder = str(Path(directory).absolute())
    if folder in known:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{BACKUPS}.tmp")
    tmp.write_bytes(orjson.dumps([*known, folder]))
    os.replace(tmp, path)


def _backups(settings: Settings) -> list[str]:
    try:
        return list(orjson.loads((settings.erasure_dir / BACKUPS).read_bytes()))
    except FileNotFoundError:
        return []


def _targets(settings: Settings) -> list[Path]:
    out = [Path(folder) / AFTER_BACKUP for folder in _backups(settings) if Path(folder).is_dir()]
    mirror = settings.erasure_register_mirror
    if mirror is not None:
        out.append(Path(mirror) / MIRROR_REGISTER)
    return out


def append_copies(settings: Settings, lines: bytes, key_file: Path) -> None:
    """Append `lines` (the register's, as written) to every copy; the mirror also gets the key."""
    for target in _targets(settings):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.name == MIRROR_REGISTER and not (target.parent / MIRROR_KEY).exists() and key_file.exists():
                shutil.copyfile(key_file, target.parent / MIRROR_KEY)
                os.chmod(target.parent / MIRROR_KEY, 0o600)
            _append(target, lines)
        except OSError as exc:
            log.warning("erasure register copy not written", extra={"copy": str(target), "error": exc.strerror})


def _append(path: Path, lines: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, lines)
        os.fsync(fd)
    finally:
        os.close(fd)


def lines_to_merge(settings: Settings, backup_dir: Path, restored: bytes) -> list[dict]:
    """The request and scope lines of the copies that the restored register lacks, in order."""
    have = {_canonical(e) for e in _entries(restored)}
    sources = [Path(backup_dir) / AFTER_BACKUP]
    if settings.erasure_register_mirror is not None:
        sources.append(Path(settings.erasure_register_mirror) / MIRROR_REGISTER)
    out: list[dict] = []
    for source in sources:
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            continue
        for entry in _entries(data):
            key = _canonical(entry)
            if entry.get("op") in MERGED_OPS and key not in have:
                have.add(key)
                out.append(entry)
    return out


def mirror_key(settings: Settings) -> Path | None:
    mirror = settings.erasure_register_mirror
    return None if mirror is None else Path(mirror) / MIRROR_KEY


def _entries(data: bytes) -> Iterable[dict]:
    for line in data.splitlines():
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line of a crashed writer


def _canonical(entry: dict) -> bytes:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
