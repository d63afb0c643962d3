"""The served marts' contract, read from the dbt manifest: the one list of their columns.

`models/marts/_marts.yml` declares each served mart's columns (`contract: {enforced: true}`, a
`data_type` per column, data tests, and a few `meta` hints). dbt enforces it when it builds the
marts; this module turns the parsed manifest into plain records that the rest of sendtime reads:
publish serializes every served column (the names not starting with `_`, in the YAML's order),
validation derives its checks from it, and the API's projection, merge fields and OpenAPI
document follow it. Publish stores the contract in the online store with the data, so every API
node serves the fields of the state it reads, without the dbt project (docs/architecture.md).

No dbt import here: the API process reads contracts as JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# the marts a cycle validates and publishes, by role (docs/architecture.md "The warehouse")
PROFILES = "customer_profiles"
RECOMMENDATIONS = "customer_recommendations"
PRODUCTS = "products"
ERASURES = "customer_erasures"
SERVED_MARTS = (PROFILES, RECOMMENDATIONS, PRODUCTS, ERASURES)

_DECIMAL = re.compile(r"^(?:decimal|numeric)\s*\(\s*\d+\s*,\s*(\d+)\s*\)$")
_INTEGERS = {"tinyint", "smallint", "int", "integer", "bigint", "hugeint", "int2", "int4", "int8", "long", "short"}
_FLOATS = {"double", "float", "real", "float4", "float8", "double precision"}


class ContractError(ValueError):
    """The manifest lacks a served mart or a column's contract cannot be served."""


@dataclass(frozen=True)
class Column:
    """One column of a served mart, as the YAML declares it."""

    name: str
    data_type: str
    description: str = ""
    not_null: bool = False
    unique: bool = False
    accepted_values: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    list_items_not_null: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def served(self) -> bool:
        """Metadata columns (`_cycle_id`, ...) stay in the warehouse."""
        return not self.name.startswith("_")

    @property
    def kind(self) -> str:
        """The JSON shape: string, integer, number, money, boolean, timestamp or list."""
        text = self.data_type.strip().lower()
        if text.endswith("[]") or text.startswith(("array", "list")):
            return "list"
        if text.startswith("timestamp") or text == "datetime":
            return "timestamp"
        if text in ("boolean", "bool"):
            return "boolean"
        if text in _INTEGERS:
            return "integer"
        if text in _FLOATS:
            return "number"
        if _DECIMAL.match(text):
            return "money"
        return "string"

    @property
    def scale(self) -> int:
        """Decimals of a money column (decimal(18, 2) -> 2)."""
        match = _DECIMAL.match(self.data_type.strip().lower())
        return int(match.group(1)) if match else 0

    @property
    def max_items(self) -> int | None:
        value = self.meta.get("max_items")
        return int(value) if value not in (None, "") else None

    @property
    def pattern(self) -> str | None:
        return self.meta.get("pattern")


@dataclass(frozen=True)
class MartContract:
    """A served mart: its columns in order, its row checks and its unique column sets."""

    name: str
    description: str
    columns: tuple[Column, ...]
    row_checks: Mapping[str, str] = field(default_factory=dict)
    unique_sets: tuple[tuple[str, ...], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def served(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.served)

    @property
    def served_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.served)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["columns"] = [{**asdict(c), "meta": dict(c.meta)} for c in self.columns]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MartContract:
        columns = tuple(
            Column(
                **{
                    **c,
                    "accepted_values": tuple(c["accepted_values"]) if c.get("accepted_values") is not None else None,
                    "meta": dict(c.get("meta") or {}),
                }
            )
            for c in data["columns"]
        )
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            columns=columns,
            row_checks=dict(data.get("row_checks") or {}),
            unique_sets=tuple(tuple(u) for u in data.get("unique_sets") or ()),
        )


Contracts = dict[str, MartContract]


def to_json(contracts: Mapping[str, MartContract]) -> str:
    return json.dumps({name: c.to_dict() for name, c in sorted(contracts.items())}, sort_keys=True)


def from_json(text: str | bytes) -> Contracts:
    return {name: MartContract.from_dict(data) for name, data in json.loads(text).items()}


def checksum(contracts: Mapping[str, MartContract]) -> str:
    return hashlib.sha256(to_json(contracts).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ from the manifest


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    """The manifest as dbt's objects or as manifest.json's dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _tests_by_model(nodes: Iterable[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in nodes:
        if str(_attr(node, "resource_type")) not in ("test", "NodeType.Test"):
            continue
        attached = _attr(node, "attached_node")
        metadata = _attr(node, "test_metadata")
        if attached and metadata is not None:
            found.setdefault(attached, []).append(node)
    return found


def _literal(value: Any) -> Any:
    """A test argument, or None when it is a Jinja expression dbt renders only at run time."""
    return None if isinstance(value, str) and "{{" in value else value


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _column(info: Any, tests: list[Any]) -> Column:
    meta = dict(_attr(info, "meta") or {})
    values: dict[str, Any] = {
        "not_null": False,
        "unique": False,
        "accepted_values": None,
        "minimum": _number(meta.get("minimum")),
        "maximum": _number(meta.get("maximum")),
        "list_items_not_null": False,
    }
    for constraint in _attr(info, "constraints") or []:
        if str(_attr(constraint, "type")).endswith("not_null"):
            values["not_null"] = True
    for test in tests:
        metadata = _attr(test, "test_metadata")
        kind, kwargs = _attr(metadata, "name"), dict(_attr(metadata, "kwargs") or {})
        if kind == "not_null":
            values["not_null"] = True
        elif kind == "unique":
            values["unique"] = True
        elif kind == "accepted_values" and isinstance(kwargs.get("values"), list):
            values["accepted_values"] = tuple(kwargs["values"])
        elif kind == "non_negative" and values["minimum"] is None:
            values["minimum"] = 0.0
        elif kind == "in_range":
            for key, arg in (("minimum", "min_value"), ("maximum", "max_value")):
                literal = _number(_literal(kwargs.get(arg)))
                if values[key] is None and literal is not None:
                    values[key] = literal
        elif kind == "list_not_null":
            values["list_items_not_null"] = True
    data_type = _attr(info, "data_type")
    name = _attr(info, "name")
    if not data_type:
        raise ContractError(f"column {name} has no data_type: every served column needs one")
    return Column(
        name=name, data_type=str(data_type), description=(_attr(info, "description") or "").strip(), meta=meta, **values
    )


def from_manifest(manifest: Any, project: str = "sendtime") -> Contracts:
    """The served marts' contracts of a parsed project (dbt's Manifest or manifest.json as a dict)."""
    nodes = _attr(manifest, "nodes") or {}
    tests = _tests_by_model(nodes.values())
    contracts: Contracts = {}
    for mart in SERVED_MARTS:
        unique_id = f"model.{project}.{mart}"
        node = nodes.get(unique_id)
        if node is None:
            raise ContractError(f"the dbt project has no served mart {mart!r}")
        config = _attr(node, "config")
        contract = _attr(config, "contract")
        if not _attr(contract, "enforced", False):
            raise ContractError(f"{mart}: the served marts need `contract: {{enforced: true}}` in their YAML")
        by_column: dict[str, list[Any]] = {}
        unique_sets: list[tuple[str, ...]] = []
        for test in tests.get(unique_id, []):
            column = _attr(test, "column_name")
            metadata = _attr(test, "test_metadata")
            if column:
                by_column.setdefault(column, []).append(test)
            elif _attr(metadata, "name") == "unique_combination":
                combination = (_attr(metadata, "kwargs") or {}).get("combination_of_columns")
                if combination:
                    unique_sets.append(tuple(combination))
        columns = tuple(_column(info, by_column.get(name, [])) for name, info in (_attr(node, "columns") or {}).items())
        meta = dict(_attr(config, "meta") or {})
        contracts[mart] = MartContract(
            name=mart,
            description=(_attr(node, "description") or "").strip(),
            columns=columns,
            row_checks={k: " ".join(str(v).split()) for k, v in (meta.get("row_checks") or {}).items()},
            unique_sets=tuple(unique_sets),
        )
    return contracts
