"""The collector's idempotency index (`collector_event_ids`): which event ids were landed.

`claim(ids)` inserts the ids with ON CONFLICT DO NOTHING ... RETURNING: the ids actually
inserted are the new ones, atomically, so two identical requests racing each other cannot both
land an event. `release(ids)` forgets them when the lake write failed, so a retry can land them.
"""
from __future__ import annotations

import secrets
from typing import Iterable

from sqlalchemy import Engine, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store import collector_event_ids

_CHUNK = 500  # ids per statement, well under SQLite's bound-parameter limit


class EventIndex:
    """One collector request's claims: `claim` the ids, `release` them if the lake write failed,
    `settle` them under the batch id once ingest reports."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # the batch id is only known once ingest reports; claims carry a token until then
        self.token = "pending-" + secrets.token_hex(8)

    def _insert(self):  # noqa: ANN202 - dialect insert
        return (sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert)(collector_event_ids)

    def claim(self, ids: Iterable[str]) -> set[str]:
        unique = list(dict.fromkeys(ids))
        new: set[str] = set()
        if not unique:
            return new
        with self.engine.begin() as conn:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                stmt = (self._insert().values([{"event_id": i, "batch_id": self.token} for i in chunk])
                        .on_conflict_do_nothing(index_elements=["event_id"])
                        .returning(collector_event_ids.c.event_id))
                new.update(row[0] for row in conn.execute(stmt))
        return new

    def release(self, ids: Iterable[str]) -> None:
        unique = list(dict.fromkeys(ids))
        with self.engine.begin() as conn:
            for start in range(0, len(unique), _CHUNK):
                conn.execute(delete(collector_event_ids).where(
                    collector_event_ids.c.event_id.in_(unique[start:start + _CHUNK]),
                    collector_event_ids.c.batch_id == self.token))

    def settle(self, batch_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(collector_event_ids).where(collector_event_ids.c.batch_id == self.token)
                         .values(batch_id=batch_id))

