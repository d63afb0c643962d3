"""Schedule a SendGrid send at each recipient's best hour: `send_at` from sendtime, per personalization.

    python docs/examples/sendgrid_send_at.py --url https://sendtime.example.com --key $SENDTIME_KEY \
        --template d-1234567890abcdef --from news@shop.example C0000001 C0000002   # prints the request
    ... --send                                                   # posts it (SENDGRID_API_KEY in the environment)

For each customer: GET /api/v1/customers/{id}/send-time (the next start of their best local hour, in
UTC) and /merge-fields (the template's data), then one personalization of the v3 Mail Send request
with `send_at` (unix seconds; SendGrid accepts up to 72 hours ahead: sendtime answers within 25) and
`custom_args.customer_id`, so the Event Webhook's opens and clicks name the customer
(POST /api/v1/webhooks/sendgrid). Up to 1,000 personalizations per request.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
from datetime import datetime


def get(url: str, key: str, path: str) -> dict:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def personalization(url: str, key: str, customer_id: str) -> dict:
    when = get(url, key, f"/api/v1/customers/{customer_id}/send-time")
    fields = get(url, key, f"/api/v1/customers/{customer_id}/merge-fields")
    send_at = datetime.fromisoformat(when["send_at"])  # Python 3.11 reads the Z
    return {
        "to": [{"email": fields["email"]}],
        "send_at": int(send_at.timestamp()),
        "custom_args": {"customer_id": customer_id},
        "dynamic_template_data": fields,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--template", default="d-00000000000000000000000000000000")
    parser.add_argument("--from", dest="sender", default="news@shop.example")
    parser.add_argument("--send", action="store_true")
    parser.add_argument("customers", nargs="+")
    args = parser.parse_args()
    body = {
        "from": {"email": args.sender},
        "template_id": args.template,
        "personalizations": [personalization(args.url, args.key, c) for c in args.customers],
    }
    if not args.send:
        print(json.dumps(body, indent=2))
        return
    request = urllib.request.Request(
        "https://api.sendgrid.com/v3/mail/send",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {os.environ['SENDGRID_API_KEY']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        print(response.status)  # 202: queued, sent at each send_at


if __name__ == "__main__":
    main()
