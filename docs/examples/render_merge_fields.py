"""Render a Handlebars-style and a Mailchimp-style template from the API's merge fields.

    python docs/examples/render_merge_fields.py --url http://127.0.0.1:8000 --key $KEY --customer c1

A deliberately small renderer (variables, {{#if x}}...{{/if}}, *|TAG|* and *|IF:TAG|*...*|END:IF|*)
to show that the merge-fields object is all a template needs: flat strings, fallbacks already
applied. Real sends use SendGrid's / Mailchimp's own renderers with the same data.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.request

HANDLEBARS = "Hi {{first_name}},{{#if recommendation_1}} picked for you: {{recommendation_1}} ({{recommendation_1_price}} {{recommendation_1_currency}}){{/if}}"
MAILCHIMP = "Hi *|FIRST_NAME|*,*|IF:CART_1|* still thinking about *|CART_1|*?*|END:IF|*"


def fetch(url: str, key: str, customer_id: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{url}/api/v1/customers/{customer_id}/merge-fields", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def render_handlebars(template: str, data: dict[str, str]) -> str:
    def block(match: re.Match) -> str:
        return match.group(2) if data.get(match.group(1)) else ""

    text = re.sub(r"\{\{#if (\w+)\}\}(.*?)\{\{/if\}\}", block, template, flags=re.S)
    return re.sub(r"\{\{(\w+)\}\}", lambda m: data.get(m.group(1), ""), text)


def render_mailchimp(template: str, data: dict[str, str]) -> str:
    upper = {k.upper(): v for k, v in data.items()}
    text = re.sub(
        r"\*\|IF:(\w+)\|\*(.*?)\*\|END:IF\|\*",
        lambda m: m.group(2) if upper.get(m.group(1)) else "",
        template,
        flags=re.S,
    )
    return re.sub(r"\*\|(\w+)\|\*", lambda m: upper.get(m.group(1), ""), text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--customer", required=True)
    args = parser.parse_args()
    data = fetch(args.url, args.key, args.customer)
    print(render_handlebars(HANDLEBARS, data))
    print(render_mailchimp(MAILCHIMP, data))


if __name__ == "__main__":
    main()
