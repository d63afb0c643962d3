"""The collector's idempotency index (`collector_event_ids`): the event ids already in the lake.

An id is recorded only AFTER the lake file holding its event is durable (serving/api/events.py):
the index never names an event the lake lacks, so an answer "duplicate" always means "already
landed", and no claim can be left pending by a failed or killed request. `claim` inserts the
landed ids with ON CONFLICT DO NOTHING ... RETURNING, inside the caller's transaction: the ids
actually inserted are the ones this request won; an id another request recorded first is a
duplicate (both lake files hold the event; staging keeps the first ingested copy).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store import collector_event_ids

_CHUNK = 500  # ids per statement, well under SQLite's bound-parameter limit
# the longest event_id the index holds: a longer one is a per-record rejection
MAX_EVENT_ID_CHARS = collector_event_ids.c.event_id.type.length


def claim(conn: Connection, ids: Iterable[str], batch_id: str) -> set[str]:
    """Record landed `ids` under `batch_id`; returns those this call inserted."""
    unique = list(dict.fromkeys(ids))
    won: set[str] = set()
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        stmt = (
            insert(collector_event_ids)
            .values([{"event_id": i, "batch_id": batch_id} for i in chunk])
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(collector_event_ids.c.event_id)
        )
        won.update(row[0] for row in conn.execute(stmt))
    return won
