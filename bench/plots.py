"""PNG plots of what the benchmarks measured, for docs/benchmarks.md.

    .venv/bin/python bench/plots.py [--in bench/out] [--out docs/img]

Reads the JSON results the bench scripts write under `bench/out/` (`<bench>.json`, e.g.
`python bench/api.py --out bench/out/api.json`) and writes `docs/img/bench-<bench>-*.png`.
Tolerant by design: a missing file is skipped, an unknown layout still gets the generic plots:
- every numeric value whose key contains `ratio` -> one bar chart against the baseline (1.0);
- every duration (`*_s`, `*_seconds`, `*_ms`) -> bar charts in seconds / milliseconds;
- every list of objects with numeric fields (a series) -> a line chart of the first field
  against the others; every list of numbers -> a line chart by position.
The API and publish results also get their own side-by-side charts. Prints what it wrote.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COLOR, OURS_COLOR = "#9c9c9c", "#4e79a7"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted.path, value) of every leaf; lists of objects are yielded whole (series)."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                yield from leaves(value, path)
            else:
                yield path, value
    else:
        yield prefix, data


def _barh(ax: Any, labels: list[str], values: list[float], color: str = OURS_COLOR) -> None:
    bars = ax.barh(range(len(values)), values, color=color)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    for bar, value in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:g}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _figure(rows: int) -> tuple[Any, Any]:
    return plt.subplots(figsize=(8, max(2.2, 0.32 * rows + 1.2)))


def ratio_plot(name: str, data: dict, out: Path) -> Path | None:
    items = [(k, v) for k, v in leaves(data) if "ratio" in k.rsplit(".", 1)[-1] and _number(v) is not None]
    if not items:
        return None
    fig, ax = _figure(len(items))
    _barh(ax, [k for k, _ in items], [round(float(v), 3) for _, v in items])
    ax.axvline(1.0, color="#c62828", linestyle="--", linewidth=1)
    ax.set_xlabel("ratio against the baseline run side by side (dashed: 1.0 = baseline)")
    ax.set_title(f"bench/{name}.py: ratios")
    return _save(fig, out / f"bench-{name}-ratios.png")


def duration_plots(name: str, data: dict, out: Path) -> list[Path]:
    written = []
    for unit, suffixes in (("s", ("_s", "_seconds")), ("ms", ("_ms",))):
        items = [
            (k, float(v))
            for k, v in leaves(data)
            if k.rsplit(".", 1)[-1].endswith(suffixes) and _number(v) is not None and "ratio" not in k
        ]
        if not items:
            continue
        fig, ax = _figure(len(items))
        _barh(ax, [k for k, _ in items], [round(v, 4) for _, v in items])
        ax.set_xlabel("seconds" if unit == "s" else "milliseconds")
        ax.set_title(f"bench/{name}.py: durations ({unit})")
        written.append(_save(fig, out / f"bench-{name}-durations-{unit}.png"))
    return written


def series_plots(name: str, data: dict, out: Path) -> list[Path]:
    written = []
    for path, value in leaves(data):
        if isinstance(value, list) and len(value) >= 2 and all(_number(v) is not None for v in value):
            fig, ax = plt.subplots(figsize=(8, 3.6))  # a plain list of numbers: one line by position
            ax.plot(range(1, len(value) + 1), value, marker="." if len(value) > 30 else "o", color=OURS_COLOR)
            ax.set_xlabel("sample")
            ax.set_ylabel(path.rsplit(".", 1)[-1])
            ax.grid(alpha=0.3)
            ax.set_title(f"bench/{name}.py: {path}")
            written.append(_save(fig, out / f"bench-{name}-{path.replace('.', '-').replace('_', '-')}.png"))
            continue
        if not (isinstance(value, list) and len(value) >= 2 and all(isinstance(v, dict) for v in value)):
            continue
        keys = [k for k in value[0] if all(_number(row.get(k)) is not None for row in value)]
        if len(keys) < 2:
            continue
        x, ys = keys[0], keys[1:6]
        fig, ax = plt.subplots(figsize=(8, 4))
        for y in ys:
            ax.plot([row[x] for row in value], [row[y] for row in value], marker="o", label=y)
        ax.set_xlabel(x)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(f"bench/{name}.py: {path}")
        slug = path.replace(".", "-").replace("_", "-")
        written.append(_save(fig, out / f"bench-{name}-{slug}.png"))
    return written


def api_plot(data: dict, out: Path) -> Path | None:
    get = data.get("get") if isinstance(data.get("get"), dict) else None
    if not get or _number(get.get("bare_rps")) is None or _number(get.get("api_rps")) is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(
        ["bare Flask\n(baseline)", "sendtime\nGET profile"],
        [get["bare_rps"], get["api_rps"]],
        color=[BASELINE_COLOR, OURS_COLOR],
    )
    left.set_ylabel("requests / s")
    left.set_title(f"throughput, ratio {get.get('ratio', get['api_rps'] / get['bare_rps']):.2f}")
    lat = [
        (label, get.get(key))
        for label, key in (("GET p50", "api_p50_ms"), ("GET p99", "api_p99_ms"), ("bare p99", "bare_p99_ms"))
    ]
    batch = data.get("batch_1000") if isinstance(data.get("batch_1000"), dict) else {}
    lat += [("batch 1000\np95", batch.get("p95_ms"))]
    during = data.get("during_publishes") if isinstance(data.get("during_publishes"), dict) else {}
    lat += [("GET p99\nduring\npublishes", during.get("p99_ms"))]
    lat = [(label, float(v)) for label, v in lat if _number(v) is not None]
    right.bar(
        [label for label, _ in lat],
        [v for _, v in lat],
        color=[BASELINE_COLOR if label.startswith("bare") else OURS_COLOR for label, _ in lat],
    )
    right.set_ylabel("ms")
    right.set_title("latency")
    right.tick_params(axis="x", labelsize=7)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"bench/api.py: {data.get('profiles', '?')} profiles, {data.get('workers', '?')} workers, wrk")
    return _save(fig, out / "bench-api.png")


def publish_plot(data: dict, out: Path) -> Path | None:
    stores = {k: v for k, v in data.items() if isinstance(v, dict) and "baseline_bare_executemany_s" in v}
    if not stores:
        return None
    measures = [
        ("baseline_bare_executemany_s", "baseline: bare executemany"),
        ("publish_new_s", "publish (insert)"),
        ("publish_update_s", "publish (update)"),
    ]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(measures)
    for i, (key, label) in enumerate(measures):
        values = [float(s.get(key) or 0) for s in stores.values()]
        ax.bar(
            [j + i * width for j in range(len(stores))],
            values,
            width,
            label=label,
            color=BASELINE_COLOR if key.startswith("baseline") else None,
        )
    ax.set_xticks([j + width for j in range(len(stores))], list(stores))
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"bench/publish.py: {data.get('profiles', '?')} changed profiles, one transaction")
    return _save(fig, out / "bench-publish.png")


def scheduler_rss_plot(data: dict, out: Path) -> Path | None:
    series = data.get("series")
    if not (isinstance(series, list) and len(series) >= 2 and all(_number(v) is not None for v in series)):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(range(1, len(series) + 1), series, color=OURS_COLOR, marker=".")
    ax.set_ylim(0, max(series) * 1.15)  # from zero: the growth is shown at its true scale
    ax.set_xlabel("cycle")
    ax.set_ylabel("scheduler RSS (MB)")
    ax.grid(alpha=0.3)
    growth = data.get("growth_last_vs_10th")
    ax.set_title(
        f"bench/scheduler_rss.py: {len(series)} cycles every {data.get('every', '?')}"
        + (f", last / 10th = {growth}" if _number(growth) is not None else "")
    )
    return _save(fig, out / "bench-scheduler-rss.png")


def freshness_plot(data: dict, out: Path) -> Path | None:
    latency = [(label, data.get(key)) for label, key in (("p50", "p50_s"), ("p95", "p95_s"), ("max", "max_s"))]
    latency = [(label, float(v)) for label, v in latency if _number(v) is not None]
    if not latency:
        return None
    phases = data.get("phase_seconds_p50") if isinstance(data.get("phase_seconds_p50"), dict) else {}
    phases = {k: float(v) for k, v in phases.items() if _number(v) is not None}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    left.bar([label for label, _ in latency], [v for _, v in latency], color=OURS_COLOR)
    left.set_ylabel("seconds")
    left.set_title("event posted -> visible in the API")
    if phases:
        bottom = 0.0
        for name, seconds in phases.items():
            right.bar(["median cycle"], [seconds], bottom=bottom, label=f"{name} {seconds:g}s")
            bottom += seconds
        right.set_title("median phase durations")
        right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"bench/freshness.py: a cycle every {data.get('every', '?')}, "
        f"{data.get('rate_events_per_s', '?')} events/s, {data.get('probes_seen', '?')} probes"
    )
    return _save(fig, out / "bench-freshness.png")


SPECIFIC = {"api": api_plot, "freshness": freshness_plot, "publish": publish_plot, "scheduler_rss": scheduler_rss_plot}


def plot_all(in_dir: Path, out_dir: Path) -> list[Path]:
    written: list[Path] = []
    for path in sorted(in_dir.glob("*.json")) if in_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(data, dict):
            continue
        name = path.stem
        specific = SPECIFIC[name](data, out_dir) if name in SPECIFIC else None
        if specific is not None:
            written.append(specific)
        if (chart := ratio_plot(name, data, out_dir)) is not None:
            written.append(chart)
        written += duration_plots(name, data, out_dir)
        if specific is None:  # the specific chart already shows the file's series
            written += series_plots(name, data, out_dir)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in", dest="in_dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--out", dest="out_dir", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    written = plot_all(args.in_dir, args.out_dir)
    if not written:
        print(f"no benchmark results under {args.in_dir} (run the bench scripts with --out {args.in_dir}/<name>.json)")
    for path in written:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
