"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks, tests/test_schemathesis.py): how to
generate the two string formats of the OpenAPI document that JSON Schema cannot spell out.

- `sendtime-timestamp`: the project's timestamp rule (docs/architecture.md "Accepted timestamp
  forms"): ISO-8601 with or without an offset, or epoch milliseconds, within years 1000-9998.
- `json-array`: a string holding a JSON array (Mailchimp Transactional's `mandrill_events` field).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

_INSTANTS = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 12, 31))
_OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def _iso(moment: datetime, offset: timezone | None) -> str:
    return moment.replace(tzinfo=offset).isoformat() if offset is not None else moment.isoformat()


_TIMESTAMPS = st.one_of(
    st.builds(_iso, _INSTANTS, st.none() | _OFFSETS),
    st.builds(lambda m: m.strftime("%Y-%m-%dT%H:%M:%SZ"), _INSTANTS),
    st.builds(
        lambda m: str(int(m.replace(tzinfo=UTC).timestamp() * 1000)),
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
    ),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

schemathesis.openapi.format("sendtime-timestamp", _TIMESTAMPS)
schemathesis.openapi.format("json-array", st.lists(_JSON, max_size=4).map(json.dumps))
