"""The marts' YAML is the one list of served columns: an analyst adds a profile field with one SQL
edit and one YAML entry, and the API serves it everywhere (DESIGN.md "One contract for the marts")."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.mart_contract import PROFILES, from_json, to_json
from tests.helpers.api_server import ApiServer, project_contracts
from tests.helpers.cli import ROOT, Cli
from tests.helpers.dbt import write_jsonl

NEW_FIELD_SQL = """        coalesce(recommended_products.recommendations, {{ empty_list() }}) as recommendations,
        cast(
            case when customers.orders_count > 0 then customers.lifetime_value / customers.orders_count end
            as decimal(18, 2)
        ) as average_order_value,
"""
NEW_FIELD_YAML = """      - name: average_order_value
        data_type: decimal(18, 2)
        description: lifetime_value / orders_count; null without a counted order.
"""


def _project_with_a_new_field(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    for part in ("models", "macros", "seeds", "tests/dbt", "analyses"):
        shutil.copytree(ROOT / part, project / part)
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(ROOT / name, project / name)
    sql = project / "models" / "marts" / "customer_profiles.sql"
    old = "        coalesce(recommended_products.recommendations, {{ empty_list() }}) as recommendations,\n"
    assert sql.read_text().count(old) == 1
    sql.write_text(sql.read_text().replace(old, NEW_FIELD_SQL))
    yml = project / "models" / "marts" / "_marts.yml"
    anchor = "        description: The product ids of customer_recommendations in rank order"
    text = yml.read_text()
    at = text.index("      - *cycle_id\n", text.index(anchor))
    yml.write_text(text[:at] + NEW_FIELD_YAML + text[at:])
    return project


def test_a_field_added_in_sql_and_yaml_is_served_everywhere(tmp_path, home):
    project = _project_with_a_new_field(tmp_path)
    cli = Cli(home, env={"SENDTIME_PROJECT_DIR": str(project)})
    cdc = [
        {
            "op": "c",
            "ts_ms": 1000,
            "before": None,
            "after": {
                "order_id": f"O{i}",
                "customer_id": "C1",
                "status": "paid",
                "currency": "USD",
                "total_amount": amount,
                "created_at": "2026-11-01T00:00:00Z",
            },
        }
        for i, amount in enumerate(("10.00", "15.01"))
    ]
    cli("ingest", "orders", str(write_jsonl(tmp_path / "orders.jsonl", cdc)))
    cli(
        "ingest",
        "customers",
        str(
            write_jsonl(
                tmp_path / "customers.jsonl",
                [{"op": "c", "ts_ms": 1000, "before": None, "after": {"customer_id": "C2", "first_name": "Ann"}}],
            )
        ),
    )
    assert cli.json("run", "--as-of", "2026-11-26T00:00:00Z")["status"] == "success"
    key = cli.json("keys", "create", "--name", "reader", "--scopes", "profiles:read")["key"]

    with ApiServer(home) as api:
        profile = api.get("/api/v1/customers/C1", key).json()
        assert list(profile)[-1] == "average_order_value"  # the YAML's order: appended last
        assert '"average_order_value":12.51' in api.get("/api/v1/customers/C1", key).text
        assert api.get("/api/v1/customers/C2", key).json()["average_order_value"] is None
        projected = api.get("/api/v1/customers/C1?fields=average_order_value", key).json()
        assert projected == {"customer_id": "C1", "average_order_value": 12.51}
        batch = api.post(
            "/api/v1/customers/batch", key, json={"customer_ids": ["C1", "C2"], "fields": ["average_order_value"]}
        ).json()
        assert batch["found"] == [
            {"customer_id": "C1", "average_order_value": 12.51},
            {"customer_id": "C2", "average_order_value": None},
        ]
        merge = api.get("/api/v1/customers/C1/merge-fields", key).json()
        assert merge["average_order_value"] == "12.51"
        schema = api.get("/openapi.json").json()["components"]["schemas"]
        assert schema["Profile"]["properties"]["average_order_value"]["type"] == ["number", "null"]
        assert "average_order_value" in schema["ProfileField"]["enum"]

    # the same home on the unchanged project: the field leaves again, everywhere (a full rebuild)
    plain = Cli(home)
    assert plain.json("run", "--as-of", "2026-11-26T00:00:00Z")["status"] == "success"
    with ApiServer(home) as api:
        assert "average_order_value" not in api.get("/api/v1/customers/C1", key).json()
        assert api.get("/api/v1/customers/C1?fields=average_order_value", key).status_code == 400


def test_the_contract_lists_every_served_column_once_and_round_trips():
    contracts = project_contracts()
    profiles = contracts[PROFILES]
    # DESIGN.md's 18 and the 6 of "Engagement and send time", and best_send_hour_confidence
    assert len(profiles.served_names) == len(set(profiles.served_names)) == 25
    assert profiles.column("lifetime_value").kind == "money" and profiles.column("lifetime_value").scale == 2
    assert profiles.column("cart").kind == "list" and profiles.column("last_seen_at").kind == "timestamp"
    assert profiles.column("recently_viewed").max_items == 5
    assert from_json(to_json(contracts)) == contracts


# the sources' contracts (DESIGN.md "Source contracts") and the generator of source files name the
# CRM's columns, some of which a profile repeats; they describe what arrives, not what is served
SOURCE_SIDE = {"pipeline/contracts.py", "pipeline/generate.py"}


def test_no_python_module_lists_profile_fields():
    # the fields live in models/marts/_marts.yml only: no module of the pipeline or the API names them
    # (customer_id and email are keys; "recommendations" is also a resource and a table; "timezone" is
    # also a field of the send-time answer, DESIGN.md "Engagement and send time")
    fields = [
        n
        for n in project_contracts()[PROFILES].served_names
        if n not in ("customer_id", "email", "recommendations", "timezone")
    ]
    for folder in ("pipeline", "serving"):
        for path in (ROOT / folder).rglob("*.py"):
            if str(path.relative_to(ROOT)) in SOURCE_SIDE:
                continue
            text = path.read_text()
            named = [f for f in fields if f'"{f}"' in text or f"'{f}'" in text]
            assert not named, f"{path.relative_to(ROOT)} names profile fields {named}"
