"""dbt-duckdb plugin of the encrypted targets (`in_process_encrypted`, `duckdb_encrypted` in
profiles.yml; docs/privacy.md "Encryption at rest").

On every connection dbt-duckdb opens, before it ATTACHes the encrypted warehouse: load DuckDB's
OpenSSL crypto module (writing an encrypted database needs it; pipeline/encryption.py) and give the
connection the lake's Parquet key, so `read_parquet(..., encryption_config = ...)` of the sources
reads the encrypted lake. The key comes from the profile (`DBT_ENV_SECRET_SENDTIME_KEY`: dbt keeps
`DBT_ENV_SECRET_*` values out of its logs and artifacts).
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from pipeline.encryption import PARQUET_KEY_NAME, load_writable_crypto


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.key = str(plugin_config.get("key") or "")
        if not self.key:
            raise ValueError("the encrypted targets need DBT_ENV_SECRET_SENDTIME_KEY (the base64 of the home's key)")

    def configure_connection(self, conn: Any) -> None:
        load_writable_crypto(conn)
        conn.execute(f"PRAGMA add_parquet_key('{PARQUET_KEY_NAME}', '{self.key}')")
