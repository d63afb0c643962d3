"""The email platforms' webhook payloads as sendtime events (DESIGN.md "Engagement and send time").

`from_sendgrid` reads the SendGrid Event Webhook's JSON array, `from_mandrill` the Mailchimp
Transactional (Mandrill) `mandrill_events` array. Each platform record becomes one event of the
events contract (pipeline/contracts.py), is skipped (counted: a kind of record sendtime does not
use), or is rejected with a reason (quarantined by the caller). The events then land exactly like
the collector's (serving/api/webhooks.py), so the contract, the quarantine and the idempotency by
event_id apply to them too.

What lands, and what never does (docs/api.md "Webhooks"):
- customer_id: the sender's custom args (SendGrid: a top-level `customer_id`; Mandrill:
  `msg.metadata.customer_id`). Without it, the recipient's email is kept only as its sha256
  (`email_hash`, pipeline.store.email_hash): the warehouse resolves it to the CRM customer with
  that email. The email itself never reaches the lake, the quarantine or a log.
- properties: the platform, its message id, the campaign (SendGrid category, Mandrill tags) and,
  for a click, the URL without its query string (queries can carry personal data). IP addresses,
  user agents, locations, subjects and bounce texts are not kept.
- a rejected record is quarantined as a redacted projection: its event, ids, timestamp, custom
  customer_id, email hash and the names of its other keys, never their values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pipeline.store import email_hash

# the platform's event -> sendtime's event type
SENDGRID_TYPES = {
    "delivered": "email_delivered",
    "open": "email_open",
    "click": "email_click",
    "bounce": "email_bounce",
    "unsubscribe": "email_unsubscribe",
    "spamreport": "email_spam_report",
}
# known kinds sendtime has no use for: counted as skipped, with the reason
SENDGRID_SKIPPED = {
    "processed": "accepted for sending, not delivered yet",
    "deferred": "a temporary delivery failure",
    "dropped": "not sent",
    "group_unsubscribe": "an unsubscribe from one group only",
    "group_resubscribe": "a resubscribe to one group only",
}
MANDRILL_TYPES = {
    "delivered": "email_delivered",
    "open": "email_open",
    "click": "email_click",
    "hard_bounce": "email_bounce",
    "unsub": "email_unsubscribe",
    "spam": "email_spam_report",
}
MANDRILL_SKIPPED = {
    "send": "accepted for sending, not delivered yet",
    "deferral": "a temporary delivery failure",
    "soft_bounce": "a temporary delivery failure",
    "reject": "not sent",
    "inbound": "an inbound message",
}
CUSTOM_ID = "customer_id"  # the custom arg / metadata key the sender attaches (README "Sending")
_NAME_CHARS = 40  # of an unknown event name in a reason


@dataclass
class Translation:
    """One platform batch: events for the contract, records rejected before it, records skipped."""

    received: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # each event's 1-based position in the batch
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason", "raw"}
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def event(self, line: int, record: dict[str, Any]) -> None:
        self.events.append(record)
        self.lines.append(line)

    def reject(self, line: int, reason: str, raw: dict[str, Any]) -> None:
        self.rejected.append({"line": line, "reason": reason, "raw": orjson.dumps(raw).decode()})

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(value: Any) -> str | None:
    """A string or an integer as trimmed text; anything else (or empty) None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        text = str(value).strip()
        return text or None
    return None


def _epoch_ms(value: Any, name: str) -> int:
    """Unix seconds (both platforms) as epoch milliseconds."""
    if isinstance(value, bool):
        raise _Rejected(f"{name}: expected unix seconds")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        seconds = int(value.strip())
    else:
        raise _Rejected(f"{name}: expected unix seconds" if value is not None else f"missing {name}")
    if not 0 < seconds < 253402300800:  # 9999-12-31
        raise _Rejected(f"{name}: out of range")
    return seconds * 1000


def _bare_url(value: Any) -> str | None:
    """A clicked URL without its query string and fragment (they can carry personal data)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))[:2000] or None


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "..."


def _digest(*parts: Any) -> str:
    return hashlib.sha256(
        orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    ).hexdigest()[:32]


def _identity(custom_id: Any, email: Any) -> dict[str, str]:
    customer_id = _text(custom_id)
    if customer_id is not None:
        return {"customer_id": customer_id}
    hashed = email_hash(email) if isinstance(email, str) else None
    if hashed is None:
        raise _Rejected(f"no {CUSTOM_ID} in the custom args and no email")
    return {"email_hash": hashed}


def _redacted(record: Any, keep: tuple[str, ...], email: Any = None, custom_id: Any = None) -> dict[str, Any]:
    """What a quarantined platform record keeps: the `keep` fields that are scalars, the custom
    customer_id, the email's hash, and the names of the other keys (never their values)."""
    if not isinstance(record, dict):
        return {"type": type(record).__name__}
    out: dict[str, Any] = {k: record[k] for k in keep if isinstance(record.get(k), (str, int, float, bool))}
    if _text(custom_id):
        out[CUSTOM_ID] = _text(custom_id)
    if isinstance(email, str) and email_hash(email):
        out["email_hash"] = email_hash(email)
    out["keys"] = sorted(str(k) for k in record if k not in out)
    return out


def _translate(
    records: Any,
    one: Callable[[dict[str, Any], Translation], dict[str, Any] | None],
    keep: tuple[str, ...],
    identity_of: Callable[[dict[str, Any]], tuple[Any, Any]],
) -> Translation:
    out = Translation(received=len(records))
    for line, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            out.reject(line, "not a JSON object", _redacted(record, keep))
            continue
        try:
            event = one(record, out)
        except _Rejected as exc:
            custom_id, email = identity_of(record)
            out.reject(line, exc.reason, _redacted(record, keep, email, custom_id))
            continue
        if event is not None:
            out.event(line, event)
    return out


# ------------------------------------------------------------------------------ SendGrid


def _sendgrid_event(record: dict[str, Any], out: Translation) -> dict[str, Any] | None:
    name = record.get("event")
    if not isinstance(name, str) or not name.strip():
        raise _Rejected("missing event")
    name = name.strip().lower()
    if name in SENDGRID_SKIPPED:
        out.skip(f"sendgrid {name}: {SENDGRID_SKIPPED[name]}")
        return None
    if name not in SENDGRID_TYPES:
        raise _Rejected(f"unknown SendGrid event {_short(name)!r}")
    if name == "open" and record.get("sg_machine_open") is True:
        # a mail client fetching the pixel (Apple Mail Privacy Protection), not the recipient reading
        out.skip("sendgrid open: a machine open")
        return None
    if name == "bounce" and str(record.get("type") or "bounce").strip().lower() == "blocked":
        out.skip("sendgrid bounce: blocked (a temporary refusal)")
        return None
    occurred_at = _epoch_ms(record.get("timestamp"), "timestamp")
    identity = _identity(record.get(CUSTOM_ID), record.get("email"))
    sg_event_id = _text(record.get("sg_event_id"))
    # the event type in the id: SendGrid's own examples reuse one sg_event_id across kinds
    event_id = (
        f"sendgrid:{sg_event_id}:{name}"
        if sg_event_id
        else f"sendgrid:{_digest(name, record.get('sg_message_id'), record.get('timestamp'), identity, record.get('url'))}"
    )
    properties: dict[str, Any] = {"source": "sendgrid"}
    if _text(record.get("sg_message_id")):
        properties["message_id"] = _text(record.get("sg_message_id"))
    category = record.get("category")
    if isinstance(category, str) or (isinstance(category, list) and all(isinstance(c, str) for c in category)):
        properties["campaign"] = category
    if name == "click" and _bare_url(record.get("url")):
        properties["url"] = _bare_url(record.get("url"))
    return {
        "event_id": event_id,
        "event_type": SENDGRID_TYPES[name],
        "occurred_at": occurred_at,
        **identity,
        "properties": properties,
    }


def from_sendgrid(records: list[Any]) -> Translation:
    """A SendGrid Event Webhook batch (the request's JSON array) as sendtime events."""
    return _translate(
        records,
        _sendgrid_event,
        ("event", "timestamp", "sg_event_id", "sg_message_id", "type"),
        lambda r: (r.get(CUSTOM_ID), r.get("email")),
    )


# ------------------------------------------------------------------------------ Mailchimp Transactional


def _mandrill_message(record: dict[str, Any]) -> dict[str, Any]:
    msg = record.get("msg")
    return msg if isinstance(msg, dict) else {}


def _mandrill_identity(record: dict[str, Any]) -> tuple[Any, Any]:
    msg = _mandrill_message(record)
    metadata = msg.get("metadata")
    custom_id = metadata.get(CUSTOM_ID) if isinstance(metadata, dict) else None
    return custom_id, msg.get("email")


def _mandrill_event(record: dict[str, Any], out: Translation) -> dict[str, Any] | None:
    name = record.get("event")
    if name is None and isinstance(record.get("type"), str):
        out.skip("mailchimp sync event (allowlist or denylist)")
        return None
    if not isinstance(name, str) or not name.strip():
        raise _Rejected("missing event")
    name = name.strip().lower().replace("-", "_")  # the docs write hard-bounce, the payloads hard_bounce
    if name in MANDRILL_SKIPPED:
        out.skip(f"mailchimp {name}: {MANDRILL_SKIPPED[name]}")
        return None
    if name not in MANDRILL_TYPES:
        raise _Rejected(f"unknown Mailchimp Transactional event {_short(name)!r}")
    occurred_at = _epoch_ms(record.get("ts"), "ts")
    custom_id, email = _mandrill_identity(record)
    identity = _identity(custom_id, email)
    msg = _mandrill_message(record)
    message_id = _text(msg.get("_id")) or _text(record.get("_id"))
    url = _bare_url(record.get("url")) if name == "click" else None
    # one message has several opens and clicks: the id is the message, the kind, the time and the link
    event_id = f"mailchimp:{_digest(record.get('_id'), message_id, name, record.get('ts'), record.get('url'))}"
    properties: dict[str, Any] = {"source": "mailchimp"}
    if message_id:
        properties["message_id"] = message_id
    tags = msg.get("tags")
    if isinstance(tags, list) and all(isinstance(t, str) for t in tags) and tags:
        properties["campaign"] = tags
    if url:
        properties["url"] = url
    return {
        "event_id": event_id,
        "event_type": MANDRILL_TYPES[name],
        "occurred_at": occurred_at,
        **identity,
        "properties": properties,
    }


def from_mandrill(records: list[Any]) -> Translation:
    """A Mailchimp Transactional `mandrill_events` batch as sendtime events."""
    return _translate(records, _mandrill_event, ("event", "type", "ts", "_id"), _mandrill_identity)
