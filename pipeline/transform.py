"""dbt in-process (docs/architecture.md, `pipeline/transform.py`): one `dbt build` per cycle.

`build` runs seeds, models and tests with `dbtRunner` in this process (the dbt CLI costs ~3 s of
start-up per call), passing the cycle's vars, SENDTIME_HOME and the target/log folders under it.
The parsed manifest is kept per home and reused while the project files are unchanged, because
vars that change every cycle (as_of, cycle_id) would otherwise force a full re-parse each time.
What a cycle builds is decided by pipeline/cycle_plan.py from the lake's new batches and the
warehouse's state; a cycle with nothing to do does not start dbt at all.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import lake_files
from pipeline.clock import utcnow
from pipeline.config import Settings
from pipeline.cycle_plan import Plan, ProjectGraph, plan_cycle
from pipeline.encryption import at_rest
from pipeline.errors import TransformError
from pipeline.logs import get_logger
from pipeline.mart_contract import ContractError, Contracts, checksum, from_manifest
from pipeline.redact import redact
from pipeline.warehouse import CycleState, Warehouse, warehouse_for

log = get_logger(__name__)


_PROJECT_PARTS = ("models", "macros", "seeds", "tests/dbt", "analyses")
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
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
    # what the cycle decided to build (pipeline/cycle_plan.py); `skipped`: dbt did not start
    plan: Plan | None = None
    # where the time went: deciding the plan, the dbt invocation (its nodes are in `nodes`)
    plan_seconds: float = 0.0
    dbt_seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.plan is not None and not self.plan.runs_dbt


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


def _seeds_signature(settings: Settings, project: str) -> str:
    """The seeds' part of a project signature (one walk of the project per build)."""
    seeds = str(settings.dbt_project_dir / "seeds") + os.sep
    return "|".join(stamp for stamp in project.split("|") if stamp.startswith(seeds))


# per home, what the last successful build in this process saw: the seeds' files, and the project
# and the lake tables that had files (a staging view over a table without files is an empty
# relation, so it must be re-created once files arrive)
_SEEDS_BUILT: dict[str, str] = {}
_VIEWS_BUILT: dict[str, str] = {}
# per home, read-through caches keyed by the warehouse's fingerprint (it moves with every write):
# the cycle state, and the contract checksum the served marts' columns were last found to match
_STATES: dict[str, tuple[object, CycleState | None]] = {}
_CONTRACTS_MATCHED: dict[str, tuple[str, object]] = {}
# per parsed manifest: the served marts' contracts and the graph the plan walks
_PARSED: dict[int, tuple[Any, Contracts, ProjectGraph]] = {}


def _views_signature(settings: Settings, project: str | None = None) -> str:
    tables = [t for t in lake_files.tables(settings.lake_dir) if lake_files.has_files(settings.lake_dir / t)]
    return (project if project is not None else _project_signature(settings)) + "|lake:" + ",".join(tables)


def _contract_changed(settings: Settings, contracts: Contracts) -> bool:
    """Does a served mart in the warehouse have other columns than its contract (a field added)?
    Checked once per contract and warehouse write: a build enforces the contract, so the columns
    match until the contract or the warehouse changes."""
    warehouse = warehouse_for(settings)
    home, stamp = str(settings.home), (checksum(contracts), warehouse.fingerprint())
    if stamp[1] is not None and _CONTRACTS_MATCHED.get(home) == stamp:
        return False
    with warehouse.reading():
        for name, contract in contracts.items():
            stored = warehouse.columns(name)
            if stored is not None and list(stored) != list(contract.names):
                return True
    _CONTRACTS_MATCHED[home] = stamp
    return False


def cycle_state(settings: Settings, warehouse: Warehouse | None = None) -> CycleState | None:
    """The warehouse's cycle state, read again only after the warehouse was written."""
    warehouse = warehouse or warehouse_for(settings)
    home, stamp = str(settings.home), warehouse.fingerprint()
    cached = _STATES.get(home)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return cached[1]
    state = warehouse.cycle_state(settings.lake_overlap_seconds)
    _STATES[home] = (stamp, state)
    return state


def _plan(
    settings: Settings,
    graph: ProjectGraph,
    *,
    as_of: datetime,
    full_refresh: bool,
    refresh_associations: bool | None,
    seeds_changed: bool,
    views_changed: bool,
) -> Plan:
    """What this cycle builds (pipeline/cycle_plan.py): the lake is listed from each table's
    watermark less the overlap on, so the listing follows the recent files, not the lake's age."""
    from datetime import timedelta

    state = None if full_refresh else cycle_state(settings)
    since = {
        table: mark - timedelta(seconds=settings.lake_overlap_seconds)
        for table, mark in (state.watermarks if state else {}).items()
    }
    batches = lake_files.list_batches(settings.lake_dir, since) if state is not None else []
    return plan_cycle(
        graph,
        state,
        batches,
        as_of=as_of,
        now=utcnow(),
        full_refresh=full_refresh,
        refresh_associations=refresh_associations,
        seeds_changed=seeds_changed,
        views_changed=views_changed,
        refresh_seconds=settings.recommendations_refresh_seconds,
        overlap_seconds=settings.lake_overlap_seconds,
    )


def _scrub(message: str) -> str:
    """dbt and DuckDB messages can quote data: never let an email or a quoted value (a name)
    through, keep it short (pipeline/redact.py: one linear pass)."""
    return redact(message, _MAX_ERROR)


def _flags(settings: Settings) -> list[str]:
    settings.dbt_log_dir.mkdir(parents=True, exist_ok=True)
    settings.dbt_target_dir.mkdir(parents=True, exist_ok=True)
    # the warehouse's target (pipeline/warehouse.py): DuckDB's in_process (in_process_encrypted for
    # an encrypted home: the encrypted warehouse and lake, pipeline/dbt_encryption.py), or spark
    target = warehouse_for(settings).dbt_target(settings.dbt_project_dir)
    return [
        "--project-dir",
        str(settings.dbt_project_dir),
        "--profiles-dir",
        str(target.profiles_dir),
        "--target-path",
        str(settings.dbt_target_dir),
        "--log-path",
        str(settings.dbt_log_dir),
        # nothing on the caller's terminal; a JSON log under SENDTIME_HOME (builds: _build_flags)
        "--log-level",
        "none",
        "--log-level-file",
        "info",
        "--log-format-file",
        "json",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
        "--target",
        target.name,
    ]


def _build_flags(settings: Settings) -> list[str]:
    """A cycle's flags: dbt would rewrite manifest.json (~1 MB, ~0.1-0.3 s) after every build; the
    parse writes it once, and build() writes run_results.json itself (every node's status, time
    and message). No dbt log file for builds: dbt turns every event into a JSON line before the
    file's level drops it (~5 % of a cycle); a failed node's error is in run_results.json and in
    the run log, and the parse and `dbt docs` still log to dbt.log."""
    flags = [*_flags(settings), "--no-write-json"]
    flags[flags.index("--log-level-file") + 1] = "none"
    return flags


class _Environment:
    """SENDTIME_HOME (read by profiles.yml and the sources) for the duration of one invocation."""

    def __init__(self, settings: Settings) -> None:
        self.values = {"SENDTIME_HOME": str(settings.home.absolute()), "DO_NOT_TRACK": "1"}
        key = at_rest(settings)
        # the key reaches dbt only for the invocation, as a DBT_ENV_SECRET_ (kept out of dbt's logs)
        self.values["DBT_ENV_SECRET_SENDTIME_KEY"] = key.text if key is not None else ""
        self.values["SENDTIME_LAKE_ENCRYPTED"] = "1" if key is not None else ""
        # what the warehouse's profile reads (the Spark master and warehouse folder)
        self.values.update(warehouse_for(settings).env)
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


def _manifest(settings: Settings, project: str | None = None) -> Any:
    """The parsed project for this home, parsed again only when the project files changed."""
    from dbt.cli.main import dbtRunner

    encrypted = "|encrypted" if at_rest(settings) is not None else ""  # the sources read the lake with the key
    signature = project if project is not None else _project_signature(settings)
    key = (str(settings.home.absolute()), f"{settings.warehouse}|{signature}{encrypted}")
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


def _parsed(settings: Settings, project: str | None = None) -> tuple[Any, Contracts, ProjectGraph]:
    """The manifest with its contracts and graph, derived once per parse."""
    manifest = _manifest(settings, project)
    found = _PARSED.get(id(manifest))
    if found is None or found[0] is not manifest:
        _PARSED.clear()  # one parse per process is current: drop the derived objects of older ones
        found = _PARSED[id(manifest)] = (manifest, from_manifest(manifest), ProjectGraph.from_manifest(manifest))
    return found


def _fresh_compilation(manifest: Any) -> None:
    """Let a reused manifest compile again: dbt marks a node whose ephemeral CTEs it injected, and
    on the next invocation it would skip the injection of freshly rendered SQL (missing CTEs)."""
    for node in manifest.nodes.values():
        if getattr(node, "extra_ctes_injected", False):
            node.extra_ctes_injected = False
        if getattr(node, "is_ephemeral_model", False):
            node.compiled = False


def _release_warehouse() -> None:
    """Close the DuckDB file the in_process target kept open, so nothing stays locked (the Spark
    session stays: the next cycle of this process reuses it)."""
    import sys

    if "dbt.adapters.duckdb.connections" not in sys.modules:
        return  # not a DuckDB build
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


def build(
    settings: Settings,
    *,
    as_of: datetime,
    cycle_id: str,
    full_refresh: bool = False,
    refresh_associations: bool | None = None,
) -> TransformResult:
    """`dbt build` in-process for one cycle; never raises for a failed node (see `ok`, `error`).
    When nothing can change (pipeline/cycle_plan.py, `skip`) dbt does not start: `skipped`."""
    from dbt.cli.main import dbtRunner

    if as_of.tzinfo is not None:  # everything inside is naive UTC
        as_of = as_of.astimezone(UTC).replace(tzinfo=None)
    variables: dict[str, Any] = {
        "as_of": as_of.isoformat(sep=" "),
        "cycle_id": cycle_id,
        "refresh_associations": refresh_associations,
        "recommendations_refresh_seconds": settings.recommendations_refresh_seconds,
        "lake_overlap_seconds": settings.lake_overlap_seconds,
    }
    started = time.perf_counter()
    home = str(settings.home)
    with _LOCK, _Environment(settings):
        settings.home.mkdir(parents=True, exist_ok=True)
        project = _project_signature(settings)  # one walk of the project files per build
        try:
            manifest, contracts, graph = _parsed(settings, project)
        except (TransformError, ContractError) as exc:
            return TransformResult(
                ok=False,
                seconds=round(time.perf_counter() - started, 3),
                full_refresh=full_refresh,
                refreshed_associations=False,
                error=str(exc),
            )
        if not full_refresh and _contract_changed(settings, contracts):
            # a served mart gained or lost a column: every row must be rebuilt and republished
            log.info("the marts' contract changed: this cycle rebuilds everything")
            full_refresh = True
        seeds, views = _seeds_signature(settings, project), _views_signature(settings, project)
        plan = _plan(
            settings,
            graph,
            as_of=as_of,
            full_refresh=full_refresh,
            refresh_associations=refresh_associations,
            seeds_changed=_SEEDS_BUILT.get(home) != seeds,
            views_changed=_VIEWS_BUILT.get(home) != views,
        )
        planned = time.perf_counter()
        if not plan.runs_dbt:
            seconds = round(planned - started, 3)
            log.info("dbt build skipped", extra={"cycle_id": cycle_id, "seconds": seconds, "reason": plan.reason})
            return TransformResult(
                ok=True,
                seconds=seconds,
                full_refresh=False,
                refreshed_associations=False,
                contracts=contracts,
                plan=plan,
                plan_seconds=seconds,
            )
        variables["refresh_associations"] = plan.refresh_associations
        variables["nothing_arrived"] = plan.nothing_arrived
        if plan.facts and not full_refresh:
            variables["cycle_facts"] = plan.facts
        args = ["build", *_build_flags(settings), "--vars", json.dumps(variables), *plan.select]
        if full_refresh:
            args.append("--full-refresh")
        _fresh_compilation(manifest)
        try:
            result = dbtRunner(manifest=manifest).invoke(args)
        finally:
            _release_warehouse()
        invoked = time.perf_counter()
        if result.success:
            _SEEDS_BUILT[home], _VIEWS_BUILT[home] = seeds, views
        _write_run_results(settings, result.result)
    nodes, error = _node_results(result.result)
    if not result.success and error is None:
        error = _scrub(str(result.exception or "dbt build failed (see the dbt log under SENDTIME_HOME)"))
    warehouse = warehouse_for(settings)
    with warehouse.reading():
        refreshed, rows = warehouse.cycle_counts(cycle_id)
        state = cycle_state(settings, warehouse)  # read now, in the same session: the next plan reuses it
    if result.success and state is not None:
        _CONTRACTS_MATCHED[home] = (checksum(contracts), warehouse.fingerprint())  # dbt enforced them
    seconds = round(time.perf_counter() - started, 3)
    outcome = TransformResult(
        ok=bool(result.success),
        seconds=seconds,
        full_refresh=full_refresh,
        refreshed_associations=refreshed if result.success else False,
        nodes=nodes,
        error=error,
        rows=rows,
        contracts=contracts,
        plan=plan,
        plan_seconds=round(planned - started, 3),
        dbt_seconds=round(invoked - planned, 3),
    )
    log.info(
        "dbt build",
        extra={
            "cycle_id": cycle_id,
            "ok": outcome.ok,
            "seconds": seconds,
            "full_refresh": full_refresh,
            "plan": plan.kind,
            **rows,
        },
    )
    return outcome


def build_selection(settings: Settings, select: list[str], *, as_of: datetime, cycle_id: str) -> TransformResult:
    """`dbt build --select ...` of exactly these nodes with a cycle's flags and vars: the floor a
    cycle is measured against (bench/cycles.py: one model) and a tool for operators. It registers
    and commits a cycle like any build; lake batches it does not read stay for the next cycle."""
    from dbt.cli.main import dbtRunner

    variables = {
        "as_of": as_of.isoformat(sep=" "),
        "cycle_id": cycle_id,
        "refresh_associations": False,
        "recommendations_refresh_seconds": settings.recommendations_refresh_seconds,
        "lake_overlap_seconds": settings.lake_overlap_seconds,
    }
    started = time.perf_counter()
    with _LOCK, _Environment(settings):
        manifest = _parsed(settings)[0]
        _fresh_compilation(manifest)
        try:
            result = dbtRunner(manifest=manifest).invoke(
                [
                    "build",
                    *_build_flags(settings),
                    "--vars",
                    json.dumps(variables),
                    "--select",
                    *select,
                    "--indirect-selection",
                    "empty",
                ]
            )
        finally:
            _release_warehouse()
    nodes, error = _node_results(result.result)
    return TransformResult(
        ok=bool(result.success),
        seconds=round(time.perf_counter() - started, 3),
        full_refresh=False,
        refreshed_associations=False,
        nodes=nodes,
        error=error,
    )


def _write_run_results(settings: Settings, run_results: Any) -> None:
    """target/run_results.json, as dbt writes it (build runs with --no-write-json)."""
    if run_results is not None and hasattr(run_results, "write"):
        try:
            run_results.write(str(settings.dbt_target_dir / "run_results.json"))
        except OSError as exc:
            log.warning("cannot write run_results.json", extra={"error": type(exc).__name__})


def served_contracts(settings: Settings) -> Contracts:
    """The served marts' contract of the project (parsed once per process while it is unchanged)."""
    with _LOCK, _Environment(settings):
        settings.home.mkdir(parents=True, exist_ok=True)
        return _parsed(settings)[1]


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
