"""The email platforms' webhook signatures: who may land engagement events without an API key.

* SendGrid's Signed Event Webhook: an ECDSA (P-256, SHA-256) signature of the timestamp header
  followed by the raw body, base64 DER in `X-Twilio-Email-Event-Webhook-Signature`, the timestamp
  in `X-Twilio-Email-Event-Webhook-Timestamp`; verified with the public key SendGrid shows when
  signing is enabled (setting `sendgrid_webhook_public_key`: its base64 DER, or a PEM block).
* Mailchimp Transactional (Mandrill): base64 HMAC-SHA1, keyed with the webhook's key (setting
  `mailchimp_webhook_key`), of the webhook URL exactly as registered followed by every POST
  parameter's name and value sorted by name, in `X-Mandrill-Signature` (newer accounts also send it
  as `X-Mailchimp-Signature`).

The `cryptography` package does the ECDSA; it is imported only when a SendGrid key is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pipeline.config import ConfigError, Settings

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MANDRILL_SIGNATURES = ("X-Mandrill-Signature", "X-Mailchimp-Signature")


@lru_cache(maxsize=4)
def sendgrid_public_key(text: str) -> Any:
    """The verification key SendGrid shows (base64 DER SubjectPublicKeyInfo), or a PEM block."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"setting sendgrid_webhook_public_key: not a public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("setting sendgrid_webhook_public_key: not an elliptic-curve (ECDSA) public key")
    return key


def sendgrid_signature_valid(key_text: str, signature: str | None, timestamp: str | None, body: bytes) -> bool:
    """Does `signature` sign timestamp + body under the configured key? False for anything missing
    or malformed (a problem 401 for the caller, never an exception)."""
    if not signature or not timestamp:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        der = base64.b64decode(signature.strip(), validate=True)
        sendgrid_public_key(key_text).verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def mandrill_signature(key: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Mailchimp Transactional computes for `url` and the POST parameters."""
    signed = url + "".join(name + value for name, value in sorted(params, key=lambda item: item[0]))
    digest = hmac.new(key.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mandrill_signature_valid(key: str, url: str, params: Iterable[tuple[str, str]], signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(mandrill_signature(key, url, params).encode(), signature.strip().encode())


def check_settings(settings: Settings) -> None:
    """A configured SendGrid key that cannot be read stops the API at start (a clear ConfigError),
    rather than answering every signed request 401."""
    if settings.sendgrid_webhook_public_key:
        sendgrid_public_key(settings.sendgrid_webhook_public_key)
