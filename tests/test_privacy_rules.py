"""Rules of the code that keep privacy where every writer passes (docs/privacy.md): only
pipeline/lake_writer.py writes lake or quarantine Parquet (so encryption at rest applies to every
writer: ingest, the collector, Kafka, the erasure), and every record validation gets the home's
settings (so the erasure register applies to every writer)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITERS = {
    "pipeline/lake_writer.py",
    # plaintext homes only: it refuses an encrypted home at start (its offsets live in the
    # Parquet footer, which DuckDB cannot read back from an encrypted file; docs/privacy.md)
    "pipeline/kafka/batches.py",
}
# writes the generator's *input* files (what a user ingests), never the lake
NOT_THE_LAKE = {"pipeline/generate.py"}


def _sources() -> list[Path]:
    return sorted(p for package in ("pipeline", "serving") for p in (ROOT / package).rglob("*.py"))


def test_only_the_lake_writer_writes_parquet():
    offenders = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        if rel in WRITERS | NOT_THE_LAKE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("ParquetWriter", "write_table", "write_to_dataset"):
                offenders.append(f"{rel}:{node.lineno} {node.attr}")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "COPY" in node.value.upper()
                and "FORMAT PARQUET" in node.value.upper().replace("(", " ")
            ):
                offenders.append(f"{rel}:{node.lineno} COPY ... (FORMAT parquet)")
    assert offenders == [], "write lake and quarantine files through pipeline/lake_writer.py: " + ", ".join(offenders)


def test_every_validation_applies_the_erasure_register():
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Validator":
                if not any(k.arg == "settings" for k in node.keywords):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "Validator(..., settings=settings): the register of the home applies: " + ", ".join(
        offenders
    )
