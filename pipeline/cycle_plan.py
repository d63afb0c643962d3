"""What a cycle builds: the dbt nodes whose inputs received something, or nothing at all.

A cycle's fixed cost is mostly per dbt node (rendering, temporary tables, column look-ups,
commits: 0.05-0.1 s each on a quiet machine whatever the rows), so a cycle builds only the nodes
that can change (docs/models.md, "What a cycle runs"):

- `skip`: nothing arrived in the lake since the last committed cycle, no refresh is forced, the
  project, seeds and lake tables are as the last build left them, and as_of has not passed the
  next instant at which a stored profile changes lifecycle stage (recorded by the last committed
  cycle): dbt does not start. DESIGN.md "Runtime rules" allows exactly this.
- `restage`: nothing arrived but as_of crossed a lifecycle boundary (or went backwards): the cycle
  bookkeeping and `customer_profiles`, which re-stages every stored row whose stage moved.
- `cycle`: the models tagged `every_cycle` (the cycle's bookkeeping), every model downstream of a
  lake table that received a batch, the association refresh models on a refresh cycle, and the
  per-cycle tables their readers need; plus the data tests tagged `every_cycle` of those models.
  A model none of whose inputs changed would write nothing: "changed in this cycle" reads rows
  written after the last committed cycle, and an unselected model wrote none.
- `everything`: every model (and seeds or views when their files changed) when the state is
  unknown or the last cycle did not commit (its half-done work is redone by a whole cycle).
- `full`: `--full-refresh`.

The association refresh is decided here (hourly by default) and handed to dbt as the var
`refresh_associations`, so the models dbt runs and the refresh it records agree. A refresh with
nothing new is not run: associations and popularity depend on the data only, not on as_of.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.lake_files import LakeBatch
from pipeline.warehouse import CycleState

EVERY_CYCLE_TAG = "every_cycle"
REFRESH_TAG = "association_refresh"
# the models of a cycle with nothing new whose lifecycle stages moved: register and commit the
# cycle, empty the touched customers, re-stage lifecycle_stage (nothing else can have changed)
RESTAGE_MODELS = ("int_cycles_registered", "int_customers_touched", "customer_profiles")
# above this many arrived batches (an outage's backlog) dbt finds them in the lake itself rather
# than in a var of that size
LISTED_BATCHES_MAX = 5000


@dataclass(frozen=True)
class Node:
    name: str
    resource_type: str
    materialized: str
    tags: frozenset[str]
    parents: tuple[str, ...]  # unique ids of the nodes and sources it reads


@dataclass(frozen=True)
class ProjectGraph:
    """The parts of dbt's manifest a plan needs: models, seeds, tests, sources by lake table."""

    nodes: dict[str, Node]  # by unique id
    lake_sources: dict[str, str]  # lake table -> source unique id
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Any) -> ProjectGraph:
        nodes: dict[str, Node] = {}
        for uid, node in manifest.nodes.items():
            kind = str(getattr(node.resource_type, "value", node.resource_type))
            if kind not in {"model", "seed", "test"}:
                continue
            config = node.config
            nodes[uid] = Node(
                name=node.name,
                resource_type=kind,
                materialized=str(getattr(config, "materialized", "") or ""),
                tags=frozenset(node.tags or ()),
                parents=tuple(getattr(node.depends_on, "nodes", ()) or ()),
            )
        lake_sources = {source.identifier or source.name: uid for uid, source in manifest.sources.items()}
        children: dict[str, list[str]] = {}
        for uid, node in nodes.items():
            for parent in node.parents:
                children.setdefault(parent, []).append(uid)
        return cls(nodes, lake_sources, {k: tuple(v) for k, v in children.items()})

    def models(self) -> dict[str, Node]:
        return {uid: n for uid, n in self.nodes.items() if n.resource_type == "model"}

    def downstream(self, roots: Iterable[str], *, through: set[str]) -> set[str]:
        """Every node reachable from `roots`, not passing beyond a node outside `through`."""
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            uid = todo.pop()
            for child in self.children.get(uid, ()):
                if child not in seen:
                    seen.add(child)
                    if child in through:
                        todo.append(child)
        return seen


@dataclass(frozen=True)
class Plan:
    kind: str  # skip, restage, cycle, everything, full
    reason: str
    # dbt selection arguments (empty for skip)
    select: tuple[str, ...] = ()
    refresh_associations: bool | None = None
    nothing_arrived: bool = False
    # lake table -> batches that arrived since the last committed cycle
    arrived: dict[str, int] = field(default_factory=dict)
    # what the models would otherwise look up in the warehouse for each use (var cycle_facts)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def runs_dbt(self) -> bool:
        return self.kind != "skip"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "arrived": dict(self.arrived),
            "refresh_associations": self.refresh_associations,
            "nodes": len([s for s in self.select if not s.startswith("-")]),
        }


def arrived_batches(state: CycleState, batches: Iterable[LakeBatch], overlap_seconds: float) -> list[LakeBatch]:
    """The listed batches a cycle would read: not committed, and not older than their table's
    watermark less the overlap (int_lake_batches_registered's rule)."""
    from datetime import timedelta

    out: list[LakeBatch] = []
    for batch in batches:
        mark = state.watermarks.get(batch.table)
        if (
            mark is not None
            and batch.ingested_at is not None
            and batch.ingested_at < mark - timedelta(seconds=overlap_seconds)
        ):
            continue
        if batch.batch_id not in state.recent_batches:
            out.append(batch)
    return out


def _count(batches: list[LakeBatch]) -> dict[str, int]:
    out: dict[str, int] = {}
    for batch in batches:
        out[batch.table] = out.get(batch.table, 0) + 1
    return out


def stages_hold(state: CycleState, as_of: datetime) -> bool:
    """No stored profile changes lifecycle stage or 30-day email counts between the last committed
    cycle's as_of and this one (next_stage_change_at: macros/cycle.sql)."""
    if state.last_as_of is None or state.next_stage_change_at is None:
        return False  # not recorded (a warehouse from before the value): ask dbt
    return state.last_as_of <= as_of <= state.next_stage_change_at


def refresh_due(state: CycleState, now: datetime, refresh_seconds: float) -> bool:
    return state.last_refresh_at is None or (now - state.last_refresh_at).total_seconds() >= refresh_seconds


_EVERYTHING = ("resource_type:model", "tag:every_cycle")


def _everything(*, seeds: bool, views: bool, refresh: bool | None) -> tuple[str, ...]:
    select = list(_EVERYTHING) + (["resource_type:seed"] if seeds else [])
    exclude: list[str] = []
    if not views:
        exclude.append("config.materialized:view")
    if refresh is False:
        exclude.append(f"tag:{REFRESH_TAG}")  # they would append nothing
    return ("--select", *select, *(("--exclude", *exclude) if exclude else ()), "--indirect-selection", "empty")


def plan_cycle(
    graph: ProjectGraph,
    state: CycleState | None,
    batches: Iterable[LakeBatch],
    *,
    as_of: datetime,
    now: datetime,
    full_refresh: bool,
    refresh_associations: bool | None,
    seeds_changed: bool,
    views_changed: bool,
    refresh_seconds: float,
    overlap_seconds: float,
) -> Plan:
    """Decide what this cycle builds (see the module's docstring)."""
    if full_refresh:
        return Plan(
            "full",
            "full refresh",
            (
                "--select",
                "resource_type:model",
                "resource_type:seed",
                "tag:every_cycle",
                "--indirect-selection",
                "empty",
            ),
            None,
        )
    if state is None:
        return Plan(
            "everything",
            "no committed state yet",
            _everything(seeds=True, views=True, refresh=refresh_associations),
            refresh_associations,
        )
    listed = arrived_batches(state, batches, overlap_seconds)
    arrived = _count(listed)
    due = refresh_due(state, now, refresh_seconds)
    if not state.last_cycle_committed or seeds_changed or views_changed:
        reason = (
            "the last cycle did not commit"
            if not state.last_cycle_committed
            else "seeds changed"
            if seeds_changed
            else "the project or the lake tables changed"
        )
        refresh = due if refresh_associations is None else refresh_associations
        return Plan(
            "everything",
            reason,
            _everything(seeds=seeds_changed, views=views_changed, refresh=refresh),
            refresh,
            arrived=arrived,
            facts=_facts(state, refresh, listed),
        )
    refresh = (bool(arrived) and due) if refresh_associations is None else refresh_associations
    if not arrived and not refresh:
        if stages_hold(state, as_of):
            return Plan("skip", "nothing arrived and no lifecycle stage moves", refresh_associations=False)
        return Plan(
            "restage",
            "nothing arrived; lifecycle stages move",
            ("--select", *RESTAGE_MODELS, "--indirect-selection", "empty"),
            False,
            nothing_arrived=True,
            facts=_facts(state, False),
        )
    nodes = _changed_nodes(graph, arrived, refresh)
    if not stages_hold(state, as_of):
        # a stored profile's stage or 30-day counts move with as_of alone, whatever arrived
        nodes |= set(RESTAGE_MODELS)
    return Plan(
        "cycle",
        "batches arrived" if arrived else "association refresh",
        ("--select", *sorted(nodes), "--indirect-selection", "empty"),
        refresh,
        arrived=arrived,
        facts=_facts(state, refresh, listed),
    )


def _facts(state: CycleState, refresh: bool, listed: list[LakeBatch] | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "last_committed_cycle_id": state.last_committed_cycle_id or "",
        "refreshes_associations": refresh,
    }
    # a file not named by a batch id (not written by the lake writer): dbt reads the lake itself
    if listed is not None and len(listed) <= LISTED_BATCHES_MAX and all(b.ingested_at for b in listed):
        tables: dict[str, list[list[str]]] = {}
        for batch in listed:
            tables.setdefault(batch.table, []).append([batch.batch_id, batch.ingested_at.isoformat(sep=" ")])
        facts["lake_batches"] = tables
    return facts


def _changed_nodes(graph: ProjectGraph, arrived: dict[str, int], refresh: bool) -> set[str]:
    models = graph.models()
    # views exist already (they read the lake at query time) and ephemerals are compiled into
    # their readers: neither is built, but changes pass through both
    buildable = {uid for uid, n in models.items() if n.materialized not in {"view", "ephemeral"}}
    bookkeeping = {uid for uid, n in models.items() if EVERY_CYCLE_TAG in n.tags}
    refreshers = {uid for uid, n in models.items() if REFRESH_TAG in n.tags}
    # bookkeeping models run every cycle, so their rows tell nothing about what changed
    passes = set(models) - bookkeeping
    roots = [graph.lake_sources[t] for t in arrived if t in graph.lake_sources]
    if refresh:
        roots += sorted(refreshers)
    selected = (graph.downstream(roots, through=passes) | (refreshers if refresh else set())) & set(models)
    if not refresh:
        selected -= refreshers  # outside a refresh they append nothing
    # per-cycle tables (materialized `table`, rebuilt whole) that a selected model reads describe
    # this cycle only: a stale one from an earlier cycle would mislead (customer_profiles' post-hook
    # deletes by int_customers_touched), so they are rebuilt whenever a reader runs
    changed = True
    while changed:
        needed = {
            p for uid in selected for p in models[uid].parents if p in models and models[p].materialized == "table"
        } - selected
        changed = bool(needed)
        selected |= needed
    selected = (selected & buildable) | bookkeeping
    tests = {
        uid
        for uid, n in graph.nodes.items()
        if n.resource_type == "test"
        and EVERY_CYCLE_TAG in n.tags
        and all(p in selected for p in n.parents if p in models)
    }
    return {graph.nodes[uid].name for uid in selected | tests}
