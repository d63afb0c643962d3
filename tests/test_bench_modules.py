"""Every benchmark is a module run as `python -m bench.NAME` from the repository (docs/benchmarks.md):
it imports without sys.path edits and without running anything, so a rename elsewhere that breaks a
benchmark fails here rather than on the day someone wants its numbers again."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers.cli import ROOT

BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")


def test_there_are_benchmarks():
    assert {"cycles", "freshness", "consume", "backup", "privacy", "send_time"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_the_benchmark_imports_and_has_a_main(name):
    module = importlib.import_module(f"bench.{name}")
    if name != "plots":  # helpers shared by the others
        assert callable(getattr(module, "main", None)), name
    assert "sys.path.insert" not in (ROOT / "bench" / f"{name}.py").read_text(), name
