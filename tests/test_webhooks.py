"""Engagement end to end against real requests (DESIGN.md "Engagement and send time"): the SendGrid
and Mailchimp Transactional webhooks with the platforms' own sample payloads and signatures (an
ECDSA key pair made here, the HMAC-SHA1 as documented), what lands in the lake and the quarantine,
then a real cycle (`sendtime run`) and the profile fields and GET /send-time from the live API.

One module fixture: a home with a CRM, the API under gunicorn with both signing keys, every webhook
request, one cycle. The tests read what it recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.config import load_settings
from pipeline.ingest import ingest_files
from serving.app import create_app
from serving.keys import create_key
from serving.webhook_signatures import mandrill_signature
from tests.helpers.api_server import ApiServer
from tests.helpers.cli import Cli
from tests.helpers.dbt import write_jsonl

SAMPLES = Path(__file__).parent / "fixtures" / "webhooks"
SENDGRID_EXAMPLE = (SAMPLES / "sendgrid_event_webhook_example.json").read_bytes()
MANDRILL_EXAMPLE = (SAMPLES / "mailchimp_transactional_test_events.json").read_text()
REGISTERED_URL = "https://sendtime.example.com/api/v1/webhooks/mailchimp"
MAILCHIMP_KEY = "a-webhook-key-Mailchimp-shows-once"
NOW = datetime.now(UTC).replace(microsecond=0)

# the CRM: the sample payloads' recipients, one with an unknown timezone, one with no history
CUSTOMERS = [
    ("C-sg", "Example@Test.com ", "America/New_York", "US"),  # SendGrid's example recipient
    ("C-mc", "example.webhook@mandrillapp.com", "Europe/Paris", "FR"),  # Mailchimp's
    ("C-mars", "mars@example.com", "Mars/Olympus_Mons", "US"),
    ("C-new", "new@example.com", "Europe/Paris", "FR"),
]


def _sha(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class SendGrid:
    """Signs like SendGrid: ECDSA P-256 / SHA-256 over timestamp + body, base64 DER."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()  # as SendGrid's settings page shows it

    def headers(self, body: bytes, timestamp: str | None = None, private: Any = None) -> dict[str, str]:
        timestamp = timestamp or str(int(NOW.timestamp()))
        signature = (private or self.private).sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def _mailchimp(events: str, key: str = MAILCHIMP_KEY, url: str = REGISTERED_URL) -> tuple[dict, dict]:
    form = {"mandrill_events": events}
    return form, {"X-Mandrill-Signature": mandrill_signature(key, url, form.items())}


# yesterday at 12:xx UTC: inside the 30-day window of the cycle's as_of (now), at a fixed hour
YESTERDAY_NOON = datetime.combine(NOW.date() - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=12)


def _recent(event: str, minutes: int, **fields: Any) -> dict[str, Any]:
    ts = int((YESTERDAY_NOON + timedelta(minutes=minutes)).timestamp())
    return {
        "event": event,
        "timestamp": ts,
        "sg_event_id": f"{event}-{minutes}",
        "sg_message_id": "recent.filter0001",
        **fields,
    }


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("webhooks") / "home"
    home.mkdir()
    settings = load_settings(home, environ={})
    crm = [
        {
            "op": "c",
            "ts_ms": 1_700_000_000_000,
            "before": None,
            "after": {
                "customer_id": cid,
                "email": email,
                "timezone": tz,
                "country": country,
                "marketing_consent": True,
            },
        }
        for cid, email, tz, country in CUSTOMERS
    ]
    ingest_files(settings, "customers", [write_jsonl(home.parent / "crm.jsonl", crm)])
    sendgrid = SendGrid()
    keys = {
        scope: create_key(settings, scope.replace(":", "-"), [scope])[0] for scope in ("profiles:read", "events:write")
    }
    env = {
        "SENDTIME_SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid.public_key,
        "SENDTIME_MAILCHIMP_WEBHOOK_KEY": MAILCHIMP_KEY,
        "SENDTIME_MAILCHIMP_WEBHOOK_URL": REGISTERED_URL,
    }
    out: dict[str, Any] = {"home": home, "keys": keys}
    with ApiServer(home, env=env) as api:
        sg, mc = api.url + "/api/v1/webhooks/sendgrid", api.url + "/api/v1/webhooks/mailchimp"
        post = requests.post
        out["sendgrid"] = post(sg, data=SENDGRID_EXAMPLE, headers=sendgrid.headers(SENDGRID_EXAMPLE), timeout=30)
        out["sendgrid_replay"] = post(sg, data=SENDGRID_EXAMPLE, headers=sendgrid.headers(SENDGRID_EXAMPLE), timeout=30)
        # a batch with one record of an unknown kind, and recent engagement (custom args name the customer)
        mixed = json.dumps(
            [
                _recent("open", 10, customer_id="C-mars", email="mars@example.com"),
                {
                    "event": "teleported",
                    "email": "someone.secret@example.com",
                    "timestamp": 1764000000,
                    "sg_event_id": "t-1",
                    "ip": "203.0.113.9",
                },
                _recent("click", 20, customer_id="C-mars", url="https://shop.example/p/P1?email=mars@example.com"),
                _recent("open", 30, email="new@example.com", sg_machine_open=True),
            ]
        ).encode()
        out["mixed"] = post(sg, data=mixed, headers=sendgrid.headers(mixed), timeout=30)
        tampered = SENDGRID_EXAMPLE.replace(b'"open"', b'"click"', 1)
        bad = {
            "tampered": post(sg, data=tampered, headers=sendgrid.headers(SENDGRID_EXAMPLE), timeout=10),
            "unsigned": post(sg, data=SENDGRID_EXAMPLE, headers={"Content-Type": "application/json"}, timeout=10),
            "other_key": post(
                sg,
                data=SENDGRID_EXAMPLE,
                timeout=10,
                headers=sendgrid.headers(SENDGRID_EXAMPLE, private=ec.generate_private_key(ec.SECP256R1())),
            ),
            "old_timestamp": post(
                sg,
                data=SENDGRID_EXAMPLE,
                timeout=10,
                headers={
                    **sendgrid.headers(SENDGRID_EXAMPLE, timestamp="1600000000"),
                    "X-Twilio-Email-Event-Webhook-Timestamp": "1600000001",
                },
            ),
            "bearer_key_only": post(
                sg,
                data=SENDGRID_EXAMPLE,
                timeout=10,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {keys['events:write']}"},
            ),
            "mailchimp_wrong_key": post(
                mc,
                timeout=10,
                data=_mailchimp(MANDRILL_EXAMPLE, key="test-webhook")[0],
                headers=_mailchimp(MANDRILL_EXAMPLE, key="test-webhook")[1],
            ),
            "mailchimp_other_url": post(
                mc,
                timeout=10,
                data=_mailchimp(MANDRILL_EXAMPLE, url=mc)[0],
                headers=_mailchimp(MANDRILL_EXAMPLE, url=mc)[1],
            ),
        }
        out["bad_signature"] = bad
        malformed = {}
        for name, body in (("not_json", b"[{not json"), ("an_object", b'{"event": "open"}')):
            malformed[name] = post(sg, data=body, headers=sendgrid.headers(body), timeout=10)
        for name, events in (("mandrill_not_json", "[{"), ("mandrill_object", '{"event": "open"}')):
            form, headers = _mailchimp(events)
            malformed[name] = post(mc, data=form, headers=headers, timeout=10)
        form = {"other": "x"}
        malformed["mandrill_no_field"] = post(
            mc,
            data=form,
            timeout=10,
            headers={"X-Mandrill-Signature": mandrill_signature(MAILCHIMP_KEY, REGISTERED_URL, form.items())},
        )
        out["malformed"] = malformed
        out["mailchimp_check"] = requests.head(mc, timeout=10)
        form, headers = _mailchimp(MANDRILL_EXAMPLE)
        out["mailchimp"] = post(mc, data=form, headers=headers, timeout=30)
        form, headers = _mailchimp("[]")  # what Mailchimp posts to test a new URL
        out["mailchimp_empty"] = post(mc, data=form, headers=headers, timeout=10)

        out["cycle"] = Cli(home).json("run")
        read = keys["profiles:read"]
        out["profiles"] = {cid: api.get(f"/api/v1/customers/{cid}", read).json() for cid, *_ in CUSTOMERS}
        out["api"] = api
        out["send_time"] = {}

        def send_time(cid: str, after: str | None = None, key: str | None = read, **kwargs: Any) -> requests.Response:
            return api.get(
                f"/api/v1/customers/{cid}/send-time", key, params={"after": after} if after else None, **kwargs
            )

        out["get_send_time"] = send_time
        yield out
    out["logs"] = api.logs()


def test_sendgrid_example_lands_once_signed_and_retried(landed) -> None:
    first, replay = landed["sendgrid"], landed["sendgrid_replay"]
    assert first.status_code == 200, first.text
    body = first.json()
    # processed, deferred, dropped and the two group events are kinds sendtime does not use
    assert (body["received"], body["accepted"], body["rejected"], body["skipped"]) == (11, 6, 0, 5)
    assert set(body["skipped_by_reason"]) == {
        "sendgrid processed: accepted for sending, not delivered yet",
        "sendgrid deferred: a temporary delivery failure",
        "sendgrid dropped: not sent",
        "sendgrid group_unsubscribe: an unsubscribe from one group only",
        "sendgrid group_resubscribe: a resubscribe to one group only",
    }
    assert replay.status_code == 200
    assert (replay.json()["accepted"], replay.json()["duplicates"]) == (0, 6)


def test_the_lake_holds_the_email_hash_never_the_email(landed) -> None:
    lake = landed["home"] / "lake" / "events"
    rows = [row for path in sorted(lake.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    sendgrid = [r for r in rows if r["_source_file"] == "webhook:sendgrid" and r["email_hash"]]
    assert {r["event_type"] for r in sendgrid} >= {
        "email_delivered",
        "email_open",
        "email_click",
        "email_bounce",
        "email_spam_report",
        "email_unsubscribe",
    }
    assert {r["email_hash"] for r in sendgrid} == {_sha("example@test.com")}
    assert all(r["customer_id"] is None for r in sendgrid)
    by_custom_args = [r for r in rows if r["customer_id"] == "C-mars"]
    assert {r["event_type"] for r in by_custom_args} == {"email_open", "email_click"}
    assert all(r["email_hash"] is None for r in by_custom_args)
    click = next(r for r in by_custom_args if r["event_type"] == "email_click")
    assert json.loads(click["properties"])["url"] == "https://shop.example/p/P1"  # no query string
    mandrill = [r for r in rows if r["_source_file"] == "webhook:mailchimp"]
    assert {r["email_hash"] for r in mandrill} == {_sha("example.webhook@mandrillapp.com")}
    # no address, IP or user agent anywhere under the home's lake and quarantine, in any form
    for folder in ("lake", "quarantine"):
        for path in (landed["home"] / folder).rglob("*"):
            if path.is_file() and "events" in path.parts:
                data = path.read_bytes()
                for secret in (
                    b"example@test.com",
                    b"mandrillapp.com",
                    b"someone.secret",
                    b"mars@example.com",
                    b"203.0.113.9",
                    b"255.255.255.255",
                    b"Postbox",
                ):
                    assert secret not in data, (path, secret)


def test_one_unknown_record_is_quarantined_and_the_rest_land(landed) -> None:
    mixed = landed["mixed"]
    assert mixed.status_code == 200, mixed.text
    body = mixed.json()
    assert (body["received"], body["accepted"], body["rejected"], body["skipped"]) == (4, 2, 1, 1)
    assert body["skipped_by_reason"] == {"sendgrid open: a machine open": 1}
    files = [p for p in (landed["home"] / "quarantine" / "events").rglob("*.jsonl") if p.stat().st_size]
    entries = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["reason"] == "unknown SendGrid event 'teleported'"
    assert entry["line"] == 2 and entry["source_file"] == "webhook:sendgrid"
    raw = json.loads(entry["raw"])
    assert raw["email_hash"] == _sha("someone.secret@example.com") and raw["event"] == "teleported"
    assert "ip" in raw["keys"] and "203.0.113.9" not in entry["raw"]


def test_a_bad_or_missing_signature_is_a_401_problem(landed) -> None:
    for name, response in landed["bad_signature"].items():
        assert response.status_code == 401, (name, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["type"].endswith("/invalid-signature"), name


def test_a_malformed_payload_is_a_400_problem(landed) -> None:
    for name, response in landed["malformed"].items():
        assert response.status_code == 400, (name, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
    assert landed["malformed"]["not_json"].json()["type"].endswith("/invalid-json")


def test_mailchimp_test_events_land_signed_over_the_registered_url(landed) -> None:
    assert landed["mailchimp_check"].status_code == 200  # HEAD, no key: Mailchimp's URL check
    response = landed["mailchimp"]
    assert response.status_code == 200, response.text
    body = response.json()
    # hard_bounce, open, click, spam, unsub land; send, deferral, soft_bounce, reject and 5 sync events do not
    assert (body["received"], body["accepted"], body["rejected"], body["skipped"]) == (14, 5, 0, 9)
    assert body["skipped_by_reason"]["mailchimp sync event (allowlist or denylist)"] == 5
    assert landed["mailchimp_empty"].status_code == 200 and landed["mailchimp_empty"].json()["received"] == 0


def test_the_cycle_serves_the_engagement_fields(landed) -> None:
    assert landed["cycle"]["status"] == "success", landed["cycle"]
    sg, mc, mars, new = (landed["profiles"][c] for c in ("C-sg", "C-mc", "C-mars", "C-new"))
    # bounce, spam report and unsubscribe at one instant: the complaint outranks the others
    assert sg["email_status"] == mc["email_status"] == "complained"
    assert sg["last_email_open_at"] == sg["last_email_click_at"] == "2017-12-15T00:59:29Z"
    assert mc["last_email_open_at"] == "2020-02-03T20:34:34Z"
    assert (sg["email_opens_30d"], sg["email_clicks_30d"]) == (0, 0)  # 2017
    assert (mars["email_opens_30d"], mars["email_clicks_30d"], mars["email_status"]) == (1, 1, "subscribed")
    # local hours: New York 19:59 EST, Paris 21:34 CET, the unknown zone read as UTC (12:10 and 12:20)
    assert (sg["best_send_hour"], mc["best_send_hour"], mars["best_send_hour"]) == (19, 21, 12)
    # own weight in the window (click 2 + open 1) over it plus the prior's 2
    assert sg["best_send_hour_confidence"] == mc["best_send_hour_confidence"] == 0.6
    # no history (a machine open counts for nothing): the hour of customers like them, confidence 0.
    # Too few peers in Paris or France: everyone's, the window around 20 (New York 19, Paris 21)
    assert new["email_opens_30d"] == 0 and new["best_send_hour_confidence"] == 0
    assert new["best_send_hour"] == 20


def test_send_time_is_the_next_start_of_the_local_hour_across_dst(landed) -> None:
    get = landed["get_send_time"]
    # New York, 19:00: EST the evening before the spring-forward night, EDT the evening after
    before = get("C-sg", "2026-03-07T12:00:00Z")
    assert before.status_code == 200, before.text
    assert before.json() == {
        "send_at": "2026-03-08T00:00:00Z",
        "local_hour": 19,
        "timezone": "America/New_York",
        "confidence": landed["profiles"]["C-sg"]["best_send_hour_confidence"],
    }
    assert get("C-sg", "2026-03-08T12:00:00Z").json()["send_at"] == "2026-03-08T23:00:00Z"
    # strictly after: at 19:00 local itself, the next day's
    assert get("C-sg", "2026-03-09T23:00:00Z").json()["send_at"] == "2026-03-10T23:00:00Z"
    # an offset in `after` (the + encoded), and Paris across the autumn change (CEST -> CET)
    assert get("C-mc", "2026-10-24T23:00:00+02:00").json()["send_at"] == "2026-10-25T20:00:00Z"
    assert get("C-mc", "2026-10-23T12:00:00Z").json()["send_at"] == "2026-10-23T19:00:00Z"
    mars = get("C-mars", "2026-01-01T00:00:00Z").json()
    assert mars["timezone"] == "UTC" and mars["send_at"] == f"2026-01-01T{mars['local_hour']:02d}:00:00Z"
    # default `after`: now
    now_answer = get("C-new").json()
    send_at = datetime.fromisoformat(now_answer["send_at"])
    assert datetime.now(UTC) < send_at <= datetime.now(UTC) + timedelta(hours=25)


def test_send_time_problems_caching_and_auth(landed) -> None:
    get = landed["get_send_time"]
    bad = get("C-sg", "yesterday")
    assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/problem+json"
    assert bad.json()["type"].endswith("/invalid-parameter")
    plus = get("C-sg", "2026-03-07T12:00:00 02:00")  # what an unencoded + becomes
    assert plus.status_code == 400 and "%2B" in plus.json()["detail"]
    assert get("C-sg", "9999-12-31T00:00:00Z").status_code == 400
    assert get("nobody", "2026-03-07T12:00:00Z").status_code == 404
    assert get("C-sg", "2026-03-07T12:00:00Z", key=None).status_code == 401
    assert get("C-sg", "2026-03-07T12:00:00Z", key=landed["keys"]["events:write"]).status_code == 403
    first = get("C-sg", "2026-03-07T12:00:00Z")
    assert first.headers["Cache-Control"].startswith("private, max-age=")
    again = get("C-sg", "2026-03-07T12:00:00Z", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_nothing_personal_in_the_api_logs(landed) -> None:
    logs = landed.get("logs") or landed["api"].logs()
    for secret in ("example@test.com", "mandrillapp.com", "someone.secret", "mars@example.com"):
        assert secret not in logs
    assert '"msg": "webhook batch"' in logs or '"msg":"webhook batch"' in logs


# ------------------------------------------------------------------------------ in-process (no server)


def test_without_a_signing_key_the_webhooks_need_an_events_write_key(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    keys = {
        scope: create_key(settings, scope.replace(":", "-"), [scope])[0] for scope in ("profiles:read", "events:write")
    }
    client = create_app(settings).test_client()
    body = SENDGRID_EXAMPLE
    assert client.post("/api/v1/webhooks/sendgrid", data=body, content_type="application/json").status_code == 401
    refused = client.post(
        "/api/v1/webhooks/sendgrid",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {keys['profiles:read']}"},
    )
    assert refused.status_code == 403
    accepted = client.post(
        "/api/v1/webhooks/sendgrid",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {keys['events:write']}"},
    )
    assert accepted.status_code == 200 and accepted.get_json()["accepted"] == 6
    assert client.head("/api/v1/webhooks/mailchimp").status_code == 200


def test_a_request_sendgrid_signed_verifies_with_its_key(tmp_path: Path) -> None:
    """A real signature from SendGrid (its SDK's test vector): key, headers and the exact body."""
    signed = json.loads((SAMPLES / "sendgrid_signed_request.json").read_text())
    settings = load_settings(tmp_path, environ={"SENDTIME_SENDGRID_WEBHOOK_PUBLIC_KEY": signed["public_key"]})
    create_key(settings, "unused", ["profiles:read"])  # creates the online store (its event index)
    client = create_app(settings).test_client()
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": signed["signature"],
        "X-Twilio-Email-Event-Webhook-Timestamp": signed["timestamp"],
    }
    ok = client.post(
        "/api/v1/webhooks/sendgrid", data=signed["body"].encode(), content_type="application/json", headers=headers
    )
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["skipped_by_reason"] == {"sendgrid dropped: not sent": 1}
    altered = client.post(
        "/api/v1/webhooks/sendgrid",
        data=signed["body"].rstrip().encode(),
        content_type="application/json",
        headers=headers,
    )
    assert altered.status_code == 401


def test_a_key_that_is_not_a_public_key_stops_the_api_at_start(tmp_path: Path) -> None:
    from pipeline.config import ConfigError

    settings = load_settings(tmp_path, environ={"SENDTIME_SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90IGEga2V5"})
    with pytest.raises(ConfigError, match="sendgrid_webhook_public_key"):
        create_app(settings)


def test_the_sendgrid_example_schedules_each_recipient_by_send_at(landed) -> None:
    """docs/examples/sendgrid_send_at.py (the README's SendGrid example) against the live API, dry run."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            str(root / "docs/examples/sendgrid_send_at.py"),
            "--url",
            landed["api"].url,
            "--key",
            landed["keys"]["profiles:read"],
            "C-sg",
            "C-mc",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    request = json.loads(out.stdout)
    sg, mc = request["personalizations"]
    assert sg["custom_args"] == {"customer_id": "C-sg"} and sg["to"] == [{"email": "example@test.com"}]
    now = datetime.now(UTC).timestamp()
    for item, hour, zone in ((sg, 19, "America/New_York"), (mc, 21, "Europe/Paris")):
        assert now < item["send_at"] <= now + 25 * 3600
        local = datetime.fromtimestamp(item["send_at"], UTC).astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute) == (hour, 0)
