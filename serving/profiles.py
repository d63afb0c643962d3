"""Profile bodies: field projection, and the flat merge-field view of a profile.

Full profiles are served as the stored text (serialized once, at publish). Only projections and
merge fields parse a body, with Decimal so money keeps its decimals (12.50 stays 12.50). The
fields are the served columns of the published contract (pipeline/mart_contract.py): a field an
analyst adds to the mart's YAML is projected and merged like the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from pipeline.mart_contract import MartContract

LIST_SEPARATOR = ", "
# the catalog column that titles a recommendation: `recommendation_<n>` is the product's name
TITLE_COLUMN = "name"


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


def field_names(contract: MartContract | None) -> tuple[str, ...]:
    return contract.served_names if contract is not None else ()


def check_fields(names: Iterable[str], contract: MartContract | None) -> list[str]:
    """Requested fields, de-duplicated in request order; UnknownField names the first bad one."""
    known = frozenset(field_names(contract))
    out: list[str] = []
    for name in names:
        if name not in known:
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


def _text(value: Any, scale: int | None = None) -> str:
    """One merge-field value as a string (docs/api.md, "Merge fields")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal) and scale is not None:
        return f"{value:.{scale}f}"  # money: always its decimals
    return str(value)


def merge_fields(
    profile: Mapping[str, Any],
    recommended: list[dict[str, Any]],
    fallbacks: Mapping[str, str],
    contract: MartContract | None,
    products: MartContract | None,
) -> dict[str, str]:
    """A flat {name: string} object for Handlebars / Mailchimp / Liquid merge tags.

    - scalars: strings as stored; timestamps ISO-8601 UTC `...Z`; booleans "true"/"false";
      integers as digits; money with its decimals;
    - lists: `<field>` comma-joined (", ") and `<field>_1..n` one per item;
    - recommendations with catalog details: `recommendation_<n>` (the product name) and
      `recommendation_<n>_<column>` for the catalog's other served columns (but those whose YAML
      says `merge_field: false`);
    - a value that is missing, null, or an empty string/list takes its fallback: the setting
      merge_field_fallbacks, else the column's `merge_fallback` in the YAML (e.g. first_name ->
      "there"), else "". A fallback for a name the profile does not produce (e.g.
      recommendation_1) fills it when absent.
    """
    out: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for column in contract.served if contract is not None else ():
        value = profile.get(column.name)
        if column.kind == "list":
            items = [str(v) for v in (value or [])]
            out[column.name] = LIST_SEPARATOR.join(items)
            for i, item in enumerate(items, 1):
                out[f"{column.name}_{i}"] = item
        else:
            out[column.name] = _text(value, column.scale if column.kind == "money" else None)
        if column.meta.get("merge_fallback") is not None:
            defaults[column.name] = str(column.meta["merge_fallback"])
    details = [
        c
        for c in (products.served if products is not None else ())
        if c.name != TITLE_COLUMN and c.meta.get("merge_field", True)
    ]
    for i, product in enumerate(recommended, 1):
        out[f"recommendation_{i}"] = _text(product.get(TITLE_COLUMN))
        for column in details:
            scale = column.scale if column.kind == "money" else None
            out[f"recommendation_{i}_{column.name}"] = _text(product.get(column.name), scale)
    for name, fallback in {**defaults, **fallbacks}.items():
        if out.get(name, "") == "":
            out[name] = str(fallback)
    return out
