"""What loading the settings costs a `sendtime` process, side by side for several source trees.

    .venv/bin/python bench/settings.py [--rounds 20] [--tree LABEL=DIR ...]

Every CLI command starts with `load_settings` (pipeline/config.py), so its cost is paid by every
`sendtime runs`, `sendtime keys list`, `sendtime ingest`... For each tree (default: this checkout;
another, e.g. an older commit unpacked with `git archive <rev> pipeline serving | tar -x -C DIR`,
is put first on PYTHONPATH), alternating the trees round by round on the same machine:

* `process`: wall time of a fresh `python -c` that imports pipeline.config, loads the settings of
  a home with a sendtime.toml and three SENDTIME_* variables, and exits (the interpreter's own
  start-up, measured with `python -c pass`, is reported separately and included);
* `import` and `first_load`: the import and the first `load_settings`, measured inside it;
* `load`: one more `load_settings` call once imported (median of 200 calls, another process);
* `sendtime runs`: wall time of the real command on an empty home.

Medians over the rounds, in milliseconds of wall time, plus the CPU time (user + system) of the
`process` and `sendtime runs` children, steadier than wall time on a shared machine; prints
Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pipeline.config import load_settings
t1 = time.perf_counter()
home, environ = sys.argv[1], {"SENDTIME_CACHE_MAX_AGE": "60", "SENDTIME_IP_ALLOWLIST": "10.0.0.0/8,192.168.0.0/16",
                              "SENDTIME_MERGE_FIELD_FALLBACKS": "first_name=there,locale=en"}
settings = load_settings(home, environ=environ)
t2 = time.perf_counter()
calls = []
for _ in range(int(sys.argv[2])):
    s = time.perf_counter()
    load_settings(home, environ=environ)
    calls.append(time.perf_counter() - s)
calls.sort()
print(json.dumps({"import": t1 - t0, "first_load": t2 - t1, "load": calls[len(calls) // 2] if calls else None,
                  "module": sys.modules["pipeline.config"].__file__}))
"""


_CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + system) of the child, per run


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(cmd: list[str], env: dict[str, str], cwd: Path, cpu_label: str | None = None) -> tuple[float, str]:
    start, cpu = time.perf_counter(), _cpu_seconds()  # cwd: `python -c` and `-m` put it first on sys.path
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    if cpu_label:
        _CPU.setdefault(cpu_label, []).append(_cpu_seconds() - cpu)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tree", action="append", default=[], help="LABEL=DIR holding pipeline/ and serving/")
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["this checkout", str(ROOT)]]
    work = Path(tempfile.mkdtemp(prefix="bench-settings-"))
    home, empty = work / "home", work / "empty"
    home.mkdir()
    empty.mkdir()
    (home / "sendtime.toml").write_text('schedule_every = "30s"\nworkers = 4\n[merge_field_fallbacks]\nlocale = "de"\n')
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SENDTIME_")}
    results: dict[str, dict[str, list[float]]] = {label: {} for label, _ in trees}
    for _ in range(args.rounds):
        for label, tree in trees:
            env = {**base_env, "PYTHONPATH": tree}
            got = results[label]
            got.setdefault("python -c pass", []).append(_wall([sys.executable, "-c", "pass"], env, work)[0])
            seconds, out = _wall([sys.executable, "-c", CHILD, str(home), "0"], env, work, f"{label}|process")
            child = json.loads(out)
            assert Path(child["module"]).is_relative_to(tree), (child["module"], tree)
            got.setdefault("process", []).append(seconds)
            for key in ("import", "first_load"):
                got.setdefault(key, []).append(child[key])
            got.setdefault("load", []).append(
                json.loads(_wall([sys.executable, "-c", CHILD, str(home), "200"], env, work)[1])["load"]
            )
            runs_env = {**env, "SENDTIME_HOME": str(empty)}
            got.setdefault("sendtime runs", []).append(
                _wall([sys.executable, "-m", "pipeline.cli", "runs"], runs_env, work, f"{label}|sendtime runs")[0]
            )
    keys = ["python -c pass", "process", "import", "first_load", "load", "sendtime runs"]
    print("| tree | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, got in results.items():
        cells = []
        for key in keys:
            ms = statistics.median(got[key]) * 1000
            cells.append(f"{ms:.3f}" if ms < 1 else f"{ms:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nwall milliseconds, medians of {args.rounds} alternating rounds\n")
    print("| tree | CPU ms (user + system): process | sendtime runs |\n|---|---:|---:|")
    for label, _ in trees:
        cells = [statistics.median(_CPU[f"{label}|{key}"]) * 1000 for key in ("process", "sendtime runs")]
        print(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
