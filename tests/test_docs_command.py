"""`sendtime docs` through the real CLI: dbt docs built under SENDTIME_HOME, the command says where,
and the docs (manifest, catalog, lineage) cover every model of models/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.cli import ROOT

pytestmark = pytest.mark.slow

MODELS = {p.stem for p in (ROOT / "models").rglob("*.sql")}


def _index_from(stdout: str) -> Path:
    match = re.search(r"open (\S+index\.html)", stdout)
    assert match, stdout
    return Path(match.group(1))


def test_docs_after_a_cycle_list_every_model(cli, home: Path) -> None:
    assert MODELS, "no dbt models found"
    files = cli.json("generate", "--customers", "30", "--events", "600", "--products", "30")
    for source in ("products", "customers", "orders", "order_items", "events"):
        cli("ingest", source, *files[source])
    cli("run")

    result = cli("docs")
    index = _index_from(result.stdout)
    assert index.is_file() and index.is_relative_to(home), index  # all state under SENDTIME_HOME
    assert "dbt docs serve" in result.stdout
    html = index.read_text()
    assert "<html" in html.lower() and "dbt" in html.lower()

    target = index.parent
    manifest = json.loads((target / "manifest.json").read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert set(models) == MODELS
    # lineage: every mart depends (transitively) on a source through staging
    parents = manifest["parent_map"]
    marts = [
        uid
        for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and "/marts/" in n["original_file_path"].replace("\\", "/")
    ]
    assert marts

    def reaches_source(uid: str, seen: set[str]) -> bool:
        if uid.startswith("source."):
            return True
        seen.add(uid)
        return any(reaches_source(p, seen) for p in parents.get(uid, []) if p not in seen)

    assert all(reaches_source(uid, set()) for uid in marts)

    # the catalog describes every model materialized in the warehouse (ephemeral ones have no table)
    catalog = json.loads((target / "catalog.json").read_text())
    in_catalog = {n["metadata"]["name"] for n in catalog["nodes"].values()}
    materialized = {name for name, n in models.items() if n["config"]["materialized"] != "ephemeral"}
    assert materialized <= in_catalog, materialized - in_catalog
    assert not catalog.get("errors")


def test_docs_on_a_fresh_home(cli, home: Path) -> None:
    """An analyst may run `sendtime docs` before any data arrived: the lineage is there already."""
    result = cli("docs")
    index = _index_from(result.stdout)
    assert index.is_file() and index.is_relative_to(home)
    manifest = json.loads((index.parent / "manifest.json").read_text())
    assert {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"} == MODELS
