"""dbt in-process (docs/architecture.md, `pipeline/transform.py`): one `dbt build` per cycle.

`build` runs seeds, models and tests with `dbtRunner` in this process (the dbt CLI costs ~3 s of
start-up per call), passing the cycle's vars, SENDTIME_HOME and the target/log folders under it.
The parsed manifest is kept per home and reused while the project files are unchanged, because
vars that change every cycle (as_of, cycle_id) would otherwise force a full re-parse each time.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.config import PROJECT_DIR, Settings
from pipeline.errors import TransformError
from pipeline.logs import get_logger
from pipeline.mart_contract import ContractError, Contracts, from_manifest
from pipeline.warehouse import warehouse_for

log = get_logger(__name__)


_PROJECT_PARTS = ("models", "macros", "seeds", "tests/dbt", "analyses")
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
_EMAIL = re.compile(r"[^\s'\"@]+@[^\s'\"@]+")
_MAX_ERROR = 2000

# dbt keeps global state (flags, adapters, event loggers): one invocation at a time
_LOCK = threading.Lock()
_MANIFESTS: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class NodeResult:
    status: str
    seconds: float


@dataclass
class TransformResult:
    ok: bool
    seconds: float
    full_refresh: bool
    refreshed_associations: bool
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    error: str | None = None
    # counts the cycle log can show: lake batches read, events changed, customers touched, rows written
    rows: dict[str, int] = field(default_factory=dict)
    # the served marts' contract of the project that built them (None when it could not be parsed)
    contracts: Contracts | None = None


def _signature(project: Path, parts: tuple[str, ...], files: tuple[str, ...] = ()) -> str:
    stamps: list[str] = [str(project)]
    for name in files:
        path = project / name
        if path.exists():
            stamps.append(f"{name}:{path.stat().st_mtime_ns}")
    for part in parts:
        for path in sorted((project / part).rglob("*")):
            if path.suffix in {".sql", ".yml", ".yaml", ".csv"}:
                stamps.append(f"{path}:{path.stat().st_mtime_ns}")
    return "|".join(stamps)


def _project_signature(settings: Settings) -> str:
    """Changes when an analyst edits the project, so a long-lived process re-parses it."""
    return _signature(settings.dbt_project_dir, _PROJECT_PARTS, _PROJECT_FILES)


# per home, what the last successful build in this process saw: the seeds' files, and the project
# and the lake tables that had files (a staging view over a table without files is an empty
# relation, so it must be re-created once files arrive)
_SEEDS_BUILT: dict[str, str] = {}
_VIEWS_BUILT: dict[str, str] = {}

# the few models a cycle runs when nothing arrived: register and commit the cycle, empty the
# touched customers, re-stage lifecycle_stage against the new as_of (nothing else can have changed)
_QUIET_CYCLE_MODELS = ("int_cycles_registered", "int_customers_touched", "customer_profiles")


def _views_signature(settings: Settings) -> str:
    tables = sorted(p.name for p in settings.lake_dir.glob("*") if any(p.glob("ingest_date=*/*.parquet")))
    return _project_signature(settings) + "|lake:" + ",".join(tables)


def _contract_changed(settings: Settings, contracts: Contracts) -> bool:
    """Does a served mart in the warehouse have other columns than its contract (a field added)?"""
    warehouse = warehouse_for(settings)
    for name, contract in contracts.items():
        stored = warehouse.columns(name)
        if stored is not None and list(stored) != list(contract.names):
            return True
    return False


def _selection(settings: Settings, full_refresh: bool, refresh_associations: bool | None) -> tuple[list[str], bool]:
    """Which nodes this cycle builds (docs/models.md, "What a cycle runs").

    A full rebuild builds every seed and model; a cycle builds the models. Both run the tests tagged
    every_cycle (the marts' keys): the other data tests scan lake-sized tables (a staging test
    parses the whole lake), so they run in analysts' `dbt build` and CI. Seeds load again only
    when their files changed, views only when the project or the set of lake tables changed. When
    no lake file arrived, the last cycle committed and no refresh is due, only the models that can
    still change run (lifecycle_stage moves with as_of), told so by the var nothing_arrived.
    Returns the selection flags and whether this is that quiet cycle.
    """
    if full_refresh:
        return ["--select", "resource_type:model", "resource_type:seed", "tag:every_cycle",
                "--indirect-selection", "empty"], False
    home = str(settings.home)
    state = warehouse_for(settings).cycle_state()
    seeds_changed = state is None or _SEEDS_BUILT.get(home) != _signature(settings.dbt_project_dir, ("seeds",))
    views_changed = state is None or _VIEWS_BUILT.get(home) != _views_signature(settings)
    if state is not None and not seeds_changed and not views_changed and refresh_associations is not True:
        committed, last_committed, refreshed_at = (state.committed_batches, state.last_cycle_committed,
                                                   state.last_refresh_at)
        lake_batches = {p.stem for p in settings.lake_dir.glob("*/ingest_date=*/*.parquet")}
        refresh_due = refresh_associations is None and (
            refreshed_at is None
            or (datetime.now(timezone.utc).replace(tzinfo=None) - refreshed_at).total_seconds()
            >= settings.recommendations_refresh_seconds)
        if last_committed and not refresh_due and lake_batches <= committed:
            return ["--select", *_QUIET_CYCLE_MODELS, "--indirect-selection", "empty"], True
    select = ["resource_type:model", "tag:every_cycle"] + (["resource_type:seed"] if seeds_changed else [])
    exclude = [] if views_changed else ["--exclude", "config.materialized:view"]
    return ["--select", *select, *exclude, "--indirect-selection", "empty"], False


def _scrub(message: str) -> str:
    """dbt and DuckDB messages can quote data: never let an email through, keep it short."""
    message = _EMAIL.sub("<redacted>", message)
    return message if len(message) <= _MAX_ERROR else message[:_MAX_ERROR] + " ..."


def _flags(settings: Settings) -> list[str]:
    settings.dbt_log_dir.mkdir(parents=True, exist_ok=True)
    settings.dbt_target_dir.mkdir(parents=True, exist_ok=True)
    return [
        "--project-dir", str(settings.dbt_project_dir),
        "--profiles-dir", str(settings.dbt_project_dir),
        "--target-path", str(settings.dbt_target_dir),
        "--log-path", str(settings.dbt_log_dir),
        # nothing on the caller's terminal; a JSON log under SENDTIME_HOME
        "--log-level", "none",
        "--log-level-file", "info",
        "--log-format-file", "json",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
        "--target", "in_process",
    ]


class _Environment:
    """SENDTIME_HOME (read by profiles.yml and the sources) for the duration of one invocation."""

    def __init__(self, settings: Settings) -> None:
        self.values = {"SENDTIME_HOME": str(settings.home.absolute()), "DO_NOT_TRACK": "1"}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _manifest(settings: Settings) -> Any:
    """The parsed project for this home, parsed again only when the project files changed."""
    from dbt.cli.main import dbtRunner

    key = (str(settings.home.absolute()), _project_signature(settings))
    manifest = _MANIFESTS.get(key)
    if manifest is None:
        result = dbtRunner().invoke(["parse", *_flags(settings)])
        if not result.success or result.result is None:
            raise TransformError(f"dbt could not parse the project: {_scrub(str(result.exception or 'see dbt log'))}")
        # one manifest per home at a time: a stale one is dropped, not accumulated
        for old in [k for k in _MANIFESTS if k[0] == key[0]]:
            del _MANIFESTS[old]
        manifest = _MANIFESTS[key] = result.result
    return manifest


def _fresh_compilation(manifest: Any) -> None:
    """Let a reused manifest compile again: dbt marks a node whose ephemeral CTEs it injected, and
    on the next invocation it would skip the injection of freshly rendered SQL (missing CTEs)."""
    for node in manifest.nodes.values():
        if getattr(node, "extra_ctes_injected", False):
            node.extra_ctes_injected = False
        if getattr(node, "is_ephemeral_model", False):
            node.compiled = False


def _release_warehouse() -> None:
    """Close the DuckDB file the in_process target kept open, so nothing stays locked."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    env = DuckDBConnectionManager._ENV  # dbt-duckdb keeps one environment per process
    if env is not None:
        env.close()
    DuckDBConnectionManager.close_all_connections()


def _node_results(run_results: Any) -> tuple[dict[str, NodeResult], str | None]:
    nodes: dict[str, NodeResult] = {}
    error: str | None = None
    for item in getattr(run_results, "results", None) or []:
        name = item.node.name
        status = str(item.status.value if hasattr(item.status, "value") else item.status)
        nodes[name] = NodeResult(status=status, seconds=round(float(item.execution_time or 0.0), 4))
        if error is None and status in {"error", "fail", "runtime error"}:
            error = f"{name}: {_scrub(str(item.message or status))}"
    return nodes, error


def build(settings: Settings, *, as_of: datetime, cycle_id: str, full_refresh: bool = False,
          refresh_associations: bool | None = None) -> TransformResult:
    """`dbt build` in-process for one cycle; never raises for a failed node (see `ok`, `error`)."""
    from dbt.cli.main import dbtRunner

    if as_of.tzinfo is not None:  # everything inside is naive UTC
        as_of = as_of.astimezone(timezone.utc).replace(tzinfo=None)
    variables: dict[str, Any] = {
        "as_of": as_of.isoformat(sep=" "),
        "cycle_id": cycle_id,
        "refresh_associations": refresh_associations,
        "recommendations_refresh_seconds": settings.recommendations_refresh_seconds,
        "lake_overlap_seconds": settings.lake_overlap_seconds,
    }
    started = time.perf_counter()
    with _LOCK, _Environment(settings):
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            manifest = _manifest(settings)
            contracts = from_manifest(manifest)
        except (TransformError, ContractError) as exc:
            return TransformResult(ok=False, seconds=round(time.perf_counter() - started, 3),
                                   full_refresh=full_refresh, refreshed_associations=False, error=str(exc))
        if not full_refresh and _contract_changed(settings, contracts):
            # a served mart gained or lost a column: every row must be rebuilt and republished
            log.info("the marts' contract changed: this cycle rebuilds everything")
            full_refresh = True
        seeds, views = _signature(settings.dbt_project_dir, ("seeds",)), _views_signature(settings)
        selection, quiet = _selection(settings, full_refresh, refresh_associations)
        variables["nothing_arrived"] = quiet
        args = ["build", *_flags(settings), "--vars", json.dumps(variables), *selection]
        if full_refresh:
            args.append("--full-refresh")
        _fresh_compilation(manifest)
        try:
            result = dbtRunner(manifest=manifest).invoke(args)
        finally:
            _release_warehouse()
        if result.success:
            _SEEDS_BUILT[str(settings.home)], _VIEWS_BUILT[str(settings.home)] = seeds, views
    nodes, error = _node_results(result.result)
    if not result.success and error is None:
        error = _scrub(str(result.exception or "dbt build failed (see the dbt log under SENDTIME_HOME)"))
    refreshed, rows = warehouse_for(settings).cycle_counts(cycle_id)
    seconds = round(time.perf_counter() - started, 3)
    outcome = TransformResult(ok=bool(result.success), seconds=seconds, full_refresh=full_refresh,
                              refreshed_associations=refreshed if result.success else False,
                              nodes=nodes, error=error, rows=rows, contracts=contracts)
    log.info("dbt build", extra={"cycle_id": cycle_id, "ok": outcome.ok, "seconds": seconds,
                                 "full_refresh": full_refresh, **rows})
    return outcome


def served_contracts(settings: Settings) -> Contracts:
    """The served marts' contract of the project (parsed once per process while it is unchanged)."""
    with _LOCK, _Environment(settings):
        settings.home.mkdir(parents=True, exist_ok=True)
        return from_manifest(_manifest(settings))


def build_docs(settings: Settings) -> Path:
    """`dbt docs generate` in-process; returns the index.html under SENDTIME_HOME."""
    from dbt.cli.main import dbtRunner

    with _LOCK, _Environment(settings):
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            result = dbtRunner().invoke(["docs", "generate", *_flags(settings)])
        finally:
            _release_warehouse()
    if not result.success:
        raise TransformError(f"dbt docs generate failed: {_scrub(str(result.exception or 'see the dbt log'))}")
    return settings.dbt_target_dir / "index.html"
