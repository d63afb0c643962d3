"""The erasure register (DESIGN.md "Privacy and access", docs/privacy.md "Erasure").

What remains of an erased customer: keyed hashes of their identifiers, the time up to which their
records are erased, and whether the erasure is complete. Never an id, an email or a name. Ingest
reads it to erase a re-ingested, replayed or restored record again (pipeline/erasure_rules.py), the
cycle reads it to know what to erase (pipeline/erasure.py), `sendtime forget --status` to answer.

`$SENDTIME_HOME/erasure/register.jsonl`, append-only, one JSON object per line:

* `{"op": "request", "h": H, "at": T, "reason": "forget" | "crm_delete", "requested_at": ...}`:
  erase the customer whose id hashes to H; records at or before T (epoch ms: occurred_at, ts_ms).
* `{"op": "scope", "of": H, "kind": K, "h": H2, "at": T}`: an identifier found to be theirs (K:
  `anonymous_id` of a linked device, `order_id` of an order that was only theirs, `email`).
* `{"op": "done", "h": H, "at": T, "completed_at": ..., "cycle_id": ...}`: every record of H at or
  before T is gone from the home.
* `{"op": "tombstone", "h": H, "at": T}`: the lake holds a CRM delete of H at T again (a customer
  deleted in the CRM whose later records were kept: "a CRM delete stays in force").

A hash is BLAKE2b keyed with the register key (`erasure/register.key`, 32 random bytes made on
first use, mode 600): `blake2b(kind + "\\0" + value, key, 16 bytes)`. Without the key nobody can
test a guessed id against the register. Appends are serialized by an flock and fsynced, each line
written with one write(2): concurrent writers (CLI, cycle) never interleave or tear a line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from pipeline.clock import iso_z, utcnow
from pipeline.config import Settings
from pipeline.erasure_copies import append_copies
from pipeline.errors import SendtimeError

REGISTER = "register.jsonl"
KEY = "register.key"
KINDS = ("customer_id", "anonymous_id", "order_id", "email")
MAX_ID_CHARS = 255


class EraseError(SendtimeError):
    """An erasure request that cannot be recorded (bad id)."""


def epoch_ms(value: datetime) -> int:
    """Naive UTC (or aware) datetime -> epoch milliseconds, the register's unit of time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def check_id(customer_id: object) -> str:
    """An id the API and the lake could hold: a string of 1-255 characters (exit 2 otherwise)."""
    if not isinstance(customer_id, str) or not 1 <= len(customer_id) <= MAX_ID_CHARS:
        shown = repr(customer_id)[:40]
        raise EraseError(f"not a customer id: {shown} (a string of 1-{MAX_ID_CHARS} characters)")
    return customer_id


# --------------------------------------------------------------------------- the key and hashes


class Hasher:
    """The register's keyed hash. `digest(kind, value)` -> 16 bytes; `index_key` -> the signed
    64-bit prefix the lake index stores (pipeline/lake_index.py)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def digest(self, kind: str, value: str) -> bytes:
        return hashlib.blake2b(
            kind.encode() + b"\0" + value.encode("utf-8", "surrogatepass"), key=self.key, digest_size=16
        ).digest()

    def hex(self, kind: str, value: str) -> str:
        return self.digest(kind, value).hex()

    @staticmethod
    def index_key(digest_hex: str) -> int:
        return int.from_bytes(bytes.fromhex(digest_hex)[:8], "big", signed=True)


def _key_path(settings: Settings) -> Path:
    return settings.erasure_dir / KEY


def hasher_for(settings: Settings) -> Hasher:
    """The home's register key, created (mode 600, O_EXCL: one winner) on first use."""
    path = _key_path(settings)
    try:
        return Hasher(path.read_bytes())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Hasher(path.read_bytes())
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    return Hasher(path.read_bytes())


# --------------------------------------------------------------------------- the register


@dataclass
class Request:
    h: str
    at: int  # epoch ms: records at or before it are erased
    reason: str
    requested_at: str


@dataclass
class Snapshot:
    """The register folded: what ingest and the cycle need, by hash."""

    # (kind, hash) -> the latest time up to which that identifier's records are erased
    erased: dict[tuple[str, str], int] = field(default_factory=dict)
    # (kind, hash) -> the customer hash it belongs to (customer_id entries map to themselves)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: dict[str, list[Request]] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # customer hash -> latest `at` completed
    crm_deletes: dict[str, int] = field(default_factory=dict)  # customer hash -> latest CRM delete
    tombstones: dict[str, int] = field(default_factory=dict)  # live tombstone of a customer (its at)

    @property
    def empty(self) -> bool:
        return not self.erased

    def pending(self) -> list[Request]:
        """Requests not yet completed (the latest per customer)."""
        out = []
        for h, requests in self.requests.items():
            latest = max(requests, key=lambda r: r.at)
            if self.done.get(h, -1) < latest.at:
                out.append(latest)
        return sorted(out, key=lambda r: (r.requested_at, r.h))

    def status(self, h: str) -> str | None:
        """complete, pending, or None when this id was never the subject of a request."""
        requests = self.requests.get(h)
        if not requests:
            return None
        return "complete" if self.done.get(h, -1) >= max(r.at for r in requests) else "pending"

    def by_kind(self, kind: str) -> dict[str, int]:
        return {h: at for (k, h), at in self.erased.items() if k == kind}


class Register:
    """One home's register file; `snapshot()` re-reads it only when it changed."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.erasure_dir / REGISTER
        self.settings = settings
        self._seen: tuple[int, int] | None = None
        self._snapshot = Snapshot()
        self._lock = threading.Lock()

    @property
    def hasher(self) -> Hasher:
        return hasher_for(self.settings)

    def snapshot(self) -> Snapshot:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return Snapshot()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._seen:
                self._snapshot = _fold(self.path.read_bytes())
                self._seen = stamp
            return self._snapshot

    def append(self, entries: Iterable[dict]) -> None:
        lines = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock
        # outside the home too, before the request is acknowledged (pipeline/erasure_copies.py)
        append_copies(self.settings, lines, _key_path(self.settings))

    # -- the requests ------------------------------------------------------------------------------
    def request(self, customer_ids: Iterable[str], *, reason: str, at: datetime | int | None = None) -> list[str]:
        """Record erasure requests; returns their hashes. `at` (default now): records at or before
        it are erased; later ones belong to a new customer and are kept."""
        now = utcnow()
        at_ms = epoch_ms(now) if at is None else (at if isinstance(at, int) else epoch_ms(at))
        hasher = self.hasher
        hashes = [hasher.hex("customer_id", check_id(cid)) for cid in customer_ids]
        current = self.snapshot()
        entries = []
        for h in dict.fromkeys(hashes):
            # a request already covering this time (a CRM delete seen again) is not repeated
            if any(r.at >= at_ms and r.reason == reason for r in current.requests.get(h, [])):
                continue
            entries.append({"op": "request", "h": h, "at": at_ms, "reason": reason, "requested_at": iso_z(now)})
        self.append(entries)
        return hashes

    def status(self, customer_id: str) -> str | None:
        return self.snapshot().status(self.hasher.hex("customer_id", check_id(customer_id)))


def _fold(data: bytes) -> Snapshot:
    snap = Snapshot()
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line of a crashed writer: ignored (appends are single writes)
        op = entry.get("op")
        if op == "request":
            h, at = entry["h"], int(entry["at"])
            snap.requests.setdefault(h, []).append(
                Request(h, at, entry.get("reason", "forget"), entry.get("requested_at", ""))
            )
            _erase(snap, "customer_id", h, at, h)
            if entry.get("reason") == "crm_delete":
                snap.crm_deletes[h] = max(at, snap.crm_deletes.get(h, at))
        elif op == "scope":
            _erase(snap, entry["kind"], entry["h"], int(entry["at"]), entry["of"])
        elif op == "done":
            h, at = entry["h"], int(entry["at"])
            snap.done[h] = max(at, snap.done.get(h, at))
            snap.tombstones.pop(h, None)  # an erasure removes the customer's tombstones with the rest
        elif op == "tombstone":
            snap.tombstones[entry["h"]] = int(entry["at"])
    return snap


def _erase(snap: Snapshot, kind: str, h: str, at: int, owner: str) -> None:
    key = (kind, h)
    snap.erased[key] = max(at, snap.erased.get(key, at))
    snap.owner[key] = owner


_REGISTERS: dict[str, Register] = {}
_REGISTERS_LOCK = threading.Lock()


def register_for(settings: Settings) -> Register:
    """One Register per home and process (its snapshot is cached on the file's mtime and size)."""
    with _REGISTERS_LOCK:
        reg = _REGISTERS.get(str(settings.home))
        if reg is None:
            reg = _REGISTERS[str(settings.home)] = Register(settings)
        return reg
