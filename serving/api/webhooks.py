"""The email platforms' webhooks: engagement events from SendGrid and Mailchimp Transactional.

`POST /api/v1/webhooks/sendgrid` takes the SendGrid Event Webhook's JSON array, `POST
/api/v1/webhooks/mailchimp` the Mailchimp Transactional form with its `mandrill_events` field
(DESIGN.md "Engagement and send time"). pipeline/webhook_events.py turns each record into an event,
a skip or a rejection; the events land through the collector's `collect()` (same contract,
quarantine and idempotency by event_id, so a platform's retry lands nothing twice), under
`_source_file` `webhook:<platform>`.

Who may call (serving/access.py): with the platform's signing key configured
(`sendgrid_webhook_public_key`, `mailchimp_webhook_key`) the route is open to requests that carry a
valid signature, and a missing or bad signature is a 401 problem; without one, it needs an API key
(or OAuth token) with `events:write`, like the collector. `HEAD /api/v1/webhooks/mailchimp` answers
200 with nothing: Mailchimp checks that the URL exists when the webhook is added, before the key
exists.

Answers: 200 with the counts (received = accepted + duplicates + rejected + skipped) once the
batch is landed; 400 for a payload that is not the platform's format (nothing lands); 413 over
collector_max_body_bytes; 503 when the lake cannot be written (retry: nothing was claimed).
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from pipeline.webhook_events import Translation, from_mandrill, from_sendgrid
from serving.access import requires
from serving.api.events import collect, writer
from serving.http import JSON, json_response, raw_body, set_version
from serving.problems import Problem
from serving.requestlog import write_line
from serving.state import state
from serving.webhook_signatures import (
    MANDRILL_SIGNATURES,
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    mandrill_signature_valid,
    sendgrid_signature_valid,
)

bp = Blueprint("webhooks", __name__)

WRITE = "events:write"
FORM = "application/x-www-form-urlencoded"
MANDRILL_FIELD = "mandrill_events"


def _records(data: bytes, what: str) -> list[Any]:
    try:
        records = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Problem("invalid-json", f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(records, list):
        raise Problem("bad-request", f"{what} must be a JSON array of events")
    return records


@bp.post("/webhooks/sendgrid")
@requires(WRITE)
def sendgrid() -> Response:
    settings = state().settings
    body = raw_body()
    key = settings.sendgrid_webhook_public_key
    if key and not sendgrid_signature_valid(
        key, request.headers.get(SENDGRID_SIGNATURE), request.headers.get(SENDGRID_TIMESTAMP), body
    ):
        raise Problem(
            "invalid-signature",
            f"no valid SendGrid signature ({SENDGRID_SIGNATURE} over {SENDGRID_TIMESTAMP} and the body)",
        )
    if request.mimetype != JSON:
        raise Problem(
            "unsupported-media-type",
            f"send the SendGrid events as {JSON} (got {request.mimetype or 'no content type'})",
        )
    return _land("sendgrid", from_sendgrid(_records(body, "the body")))


@bp.post("/webhooks/mailchimp")
@requires(WRITE)
def mailchimp() -> Response:
    settings = state().settings
    if request.mimetype != FORM:
        raise Problem(
            "unsupported-media-type",
            f"send the Mailchimp Transactional form as {FORM} (got {request.mimetype or 'no content type'})",
        )
    form = request.form  # Werkzeug enforces MAX_CONTENT_LENGTH while parsing (413)
    key = settings.mailchimp_webhook_key
    if key:
        url = settings.mailchimp_webhook_url or request.url
        signature = next((request.headers[h] for h in MANDRILL_SIGNATURES if h in request.headers), None)
        if not mandrill_signature_valid(key, url, form.items(multi=True), signature):
            raise Problem(
                "invalid-signature",
                "no valid Mailchimp Transactional signature "
                f"({MANDRILL_SIGNATURES[0]}: the webhook URL as registered and the "
                "POST parameters, HMAC-SHA1 with the webhook's key)",
            )
    field = form.get(MANDRILL_FIELD)
    if field is None:
        raise Problem("bad-request", f"the form has no {MANDRILL_FIELD} field")
    return _land("mailchimp", from_mandrill(_records(field.encode("utf-8"), MANDRILL_FIELD)))


@bp.route("/webhooks/mailchimp", methods=["HEAD"], endpoint="mailchimp_check")
def mailchimp_check() -> Response:
    """Mailchimp Transactional's check that the URL exists, when a webhook is added."""
    return Response(status=200)


def _land(platform: str, batch: Translation) -> Response:
    set_version(state().reader.version())
    report: dict[str, Any] = {"batch_id": None, "accepted": 0, "duplicates": 0, "rejected": 0}
    if batch.events or batch.rejected:
        report = collect(
            state().settings,
            writer(),
            batch.events,
            state().reader,
            source_file=f"webhook:{platform}",
            lines=batch.lines,
            pre_rejected=batch.rejected,
        )
    counts = {
        "received": batch.received,
        "accepted": report["accepted"],
        "duplicates": report.get("duplicates", 0),
        "rejected": report["rejected"],
        "skipped": batch.skipped_count,
    }
    # counts and reasons only: never an email, a customer id or a payload
    write_line("info", "sendtime.webhooks", "webhook batch", platform=platform, batch_id=report["batch_id"], **counts)
    return json_response(orjson.dumps({"batch_id": report["batch_id"], **counts, "skipped_by_reason": batch.skipped}))
