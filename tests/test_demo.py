"""`sendtime demo` end to end, as a user runs it: wait for the curl line, run it as printed, then
Ctrl-C (SIGINT): every child process is gone and the ports are free. A second run on the same home
reuses the published state and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from pipeline.demo import port_free
from tests.helpers.cli import ROOT
from tests.helpers.net import free_port

pytestmark = pytest.mark.slow


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, out, todo = _children_of(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()[:120].replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


class Demo:
    def __init__(self, home: Path, port: int, *args: str) -> None:
        self.lines: list[str] = []
        self.errors = home.parent / f"demo-{port}.err"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "demo",
                "--customers",
                "40",
                "--events",
                "1500",
                "--every",
                "3s",
                "--port",
                str(port),
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, "SENDTIME_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=open(self.errors, "wb"),
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 420) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if line.startswith(prefix)]
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"no line starting {prefix!r}; exit {self.proc.poll()}\n"
            + "\n".join(self.lines)
            + "\n"
            + self.errors.read_text(errors="replace")[-3000:]
        )

    def value(self, label: str) -> str:
        line = self.wait_for(f"  {label}")
        return line.split()[len(label.split())]

    def kill_everything(self, pids: set[int]) -> None:
        """Cleanup after a failed assertion only: the processes this test started."""
        for pid in pids | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _stop_and_check(demo: Demo, sig: int, ports: list[int]) -> None:
    children = descendants(demo.proc.pid)
    # the API master, its 2 workers, the scheduler
    assert len(children) >= 4, children
    try:
        demo.proc.send_signal(sig)
        assert demo.proc.wait(timeout=90) == 0, demo.errors.read_text(errors="replace")[-3000:]
        demo.reader.join(timeout=5)
        # helpers that exit when their parent does (multiprocessing's resource tracker) get a moment
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: _cmdline(pid) for pid in children if running(pid)}
        assert not left, f"still running after the demo stopped: {left}"
        for port in ports:
            assert port_free("127.0.0.1", port), f"port {port} still taken"
        assert any("nothing is left running" in line for line in demo.lines)
    finally:
        demo.kill_everything({p for p in children if running(p)})


def test_demo_serves_prints_a_working_curl_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    demo = Demo(home, port)
    try:
        curl = demo.wait_for("curl ")
        key = demo.value("API key")
        docs_url = demo.value("dbt docs")
        base = f"http://127.0.0.1:{port}"
        assert demo.value("status page") == f"{base}/status"

        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        profile = json.loads(result.stdout)
        assert profile["customer_id"] and profile["customer_id"] in curl
        assert isinstance(profile["recently_viewed"], list)

        # the key has exactly the demo scopes; the status page is open; the docs are served
        assert (
            requests.post(
                f"{base}/api/v1/events", json={"events": []}, timeout=10, headers={"Authorization": f"Bearer {key}"}
            ).status_code
            != 403
        )
        status_page = requests.get(f"{base}/status", timeout=10)  # open in the demo, no key
        assert status_page.status_code == 200 and 'id="chart-duration"' in status_page.text
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert float(re.search(r'^sendtime_cycles_total\{status="success"\} (\S+)$', metrics, re.M).group(1)) >= 1
        assert float(re.search(r"^sendtime_published_version (\S+)$", metrics, re.M).group(1)) >= 1
        assert re.search(r"^sendtime_freshness_lag_seconds \S+$", metrics, re.M)
        assert requests.get(docs_url, timeout=10).status_code == 200
        assert requests.get(docs_url + "manifest.json", timeout=10).json()["nodes"]
        docs_port = int(docs_url.rsplit(":", 1)[1].strip("/"))

        # the sample traffic reaches the collector: event batches keep arriving in the store
        def collector_batches() -> float:
            text = requests.get(f"{base}/metrics", timeout=10).text
            match = re.search(r'^sendtime_ingest_batches_total\{source="events"\} (\S+)$', text, re.M)
            return float(match.group(1)) if match else 0.0

        first = collector_batches()
        deadline = time.monotonic() + 60
        while collector_batches() <= first and time.monotonic() < deadline:
            time.sleep(1)
        assert collector_batches() > first
    except BaseException:
        demo.kill_everything(descendants(demo.proc.pid))
        raise
    _stop_and_check(demo, signal.SIGINT, [port, docs_port])

    # again on the same home: nothing is generated, ingested or built again; SIGTERM stops it
    demo = Demo(home, port)
    try:
        demo.wait_for("curl ")
        assert any(line.startswith("reusing the published state") for line in demo.lines), demo.lines
        assert not any("generate synthetic data" in line for line in demo.lines)
    except BaseException:
        demo.kill_everything(descendants(demo.proc.pid))
        raise
    _stop_and_check(demo, signal.SIGTERM, [port])


def test_demo_refuses_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "demo", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "SENDTIME_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert not (tmp_path / "home" / "generated").exists()  # failed before doing anything


def test_fresh_wipes_state_but_keeps_the_config(tmp_path: Path) -> None:
    from pipeline.config import load_settings
    from pipeline.demo import wipe_state

    home = tmp_path / "home"
    for part in (
        "lake/events/x.parquet",
        "quarantine/events/q.jsonl",
        "generated/events-0001.jsonl",
        "dbt/target/index.html",
        "warehouse.duckdb",
        "online.sqlite",
        "logs/demo-api.log",
    ):
        (home / part).parent.mkdir(parents=True, exist_ok=True)
        (home / part).write_text("x")
    (home / "sendtime.toml").write_text("[sendtime]\nschedule_every = '1m'\n")
    removed = {p.name for p in wipe_state(load_settings(home, environ={}))}
    assert removed == {"lake", "quarantine", "generated", "dbt", "warehouse.duckdb", "online.sqlite"}
    assert (home / "sendtime.toml").exists() and (home / "logs" / "demo-api.log").exists()
    assert not (home / "lake").exists() and not (home / "online.sqlite").exists()
