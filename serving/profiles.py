"""Profile bodies: field projection, and the flat merge-field view of a profile.

Full profiles are served as the stored text (serialized once, at publish). Only projections and
merge fields parse a body, with Decimal so money keeps its 2 decimals (12.50 stays 12.50).
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable, Mapping

import orjson

# DESIGN.md "Mart contract: the customer profile", in order
PROFILE_FIELDS: tuple[str, ...] = (
    "customer_id", "email", "first_name", "last_name", "country", "locale", "timezone",
    "marketing_consent", "first_seen_at", "last_seen_at", "orders_count", "lifetime_value",
    "last_order_at", "lifecycle_stage", "recently_viewed", "cart", "top_categories", "recommendations",
)
LIST_FIELDS = ("recently_viewed", "cart", "top_categories", "recommendations")
LIST_SEPARATOR = ", "
_KNOWN = frozenset(PROFILE_FIELDS)


class UnknownField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_body(body: str | bytes) -> dict[str, Any]:
    return json.loads(body, parse_float=Decimal)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # the number exactly as stored: 12.50, not 12.5
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def check_fields(names: Iterable[str]) -> list[str]:
    """Requested fields, de-duplicated in request order; UnknownField names the first bad one."""
    out: list[str] = []
    for name in names:
        if name not in _KNOWN:
            raise UnknownField(name)
        if name not in out:
            out.append(name)
    return out


def project(profile: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    """customer_id, then the requested fields in the order asked."""
    out = {"customer_id": profile.get("customer_id")}
    for name in fields:
        out[name] = profile.get(name)
    return out


def _text(value: Any) -> str:
    """One merge-field value as a string (docs/api.md, "Merge fields")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:.2f}"  # money: always 2 decimals
    return str(value)


def merge_fields(profile: Mapping[str, Any], recommended: list[dict[str, Any]],
                 fallbacks: Mapping[str, str]) -> dict[str, str]:
    """A flat {name: string} object for Handlebars / Mailchimp / Liquid merge tags.

    - scalars: strings as stored; timestamps ISO-8601 UTC `...Z`; booleans "true"/"false";
      orders_count as digits; lifetime_value with 2 decimals;
    - lists: `<field>` comma-joined (", ") and `<field>_1..n` one per item;
    - recommendations with catalog details: `recommendation_<n>` (the product name) and
      `recommendation_<n>_product_id|url|image_url|price|currency|category`;
    - a value that is missing, null, or an empty string/list takes the configured fallback for
      its name (e.g. first_name -> "there"), else "". A fallback for a name the profile does not
      produce (e.g. recommendation_1) fills it when absent.
    """
    out: dict[str, str] = {}
    for name in PROFILE_FIELDS:
        value = profile.get(name)
        if name in LIST_FIELDS:
            items = [str(v) for v in (value or [])]
            out[name] = LIST_SEPARATOR.join(items)
            for i, item in enumerate(items, 1):
                out[f"{name}_{i}"] = item
        else:
            out[name] = _text(value)
    for i, product in enumerate(recommended, 1):
        out[f"recommendation_{i}"] = _text(product.get("name"))
        for key in ("product_id", "url", "image_url", "price", "currency", "category"):
            out[f"recommendation_{i}_{key}"] = _text(product.get(key))
    for name, fallback in fallbacks.items():
        if out.get(name, "") == "":
            out[name] = str(fallback)
    return out
