"""`sendtime demo`: the quick start. Generate, ingest, build, validate, publish (with progress
bars), build the dbt docs, then run the API and the scheduler until Ctrl-C.

While it runs, a thread posts a few sample events through the collector every `every`, so
the scheduler's cycles publish changes and the status page and /metrics show a live pipeline.

The API (`sendtime serve`) and the scheduler (`sendtime schedule`) run as child processes, exactly
as in production: `serve` only serves and `schedule` only runs cycles. Each child gets its own
session, so a Ctrl-C reaches the demo only and the demo stops the children in order; on Linux the
children also get SIGTERM if the demo itself dies (PR_SET_PDEATHSIG), so nothing is left running.

Reusing a home: when the home already has a published state, the demo skips generation, ingest and
the first build and starts serving it (a previous demo's data). Files already generated are not
generated again, and files already ingested (by name, per source) are not ingested again, so an
interrupted demo resumes where it stopped. `fresh=True` (`sendtime demo --fresh`) first deletes
the home's state (lake, quarantine, warehouse, SQLite online store, generated files, dbt target).
"""

from __future__ import annotations

import ctypes
import http.server
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipeline.clock import utcnow
from pipeline.config import Settings, parse_duration
from pipeline.errors import SendtimeError
from pipeline.logs import get_logger, setup_logging

log = get_logger(__name__)

SOURCES_IN_ORDER = ("products", "customers", "orders", "order_items", "events")
DEMO_SCOPES = ["profiles:read", "events:write"]
HOST = "127.0.0.1"  # the demo never listens beyond this machine
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
_STATE_PARTS = (
    "lake",
    "quarantine",
    "generated",
    "dbt",
    "warehouse.duckdb",
    "warehouse.duckdb.wal",
    "spark",  # warehouse = "spark": the Delta tables and the Derby metastore (docs/spark.md)
    "online.sqlite",
    "online.sqlite-wal",
    "online.sqlite-shm",
    # the erasure register and lake index, and the home's key id (docs/privacy.md)
    "erasure",
    "encryption.json",
)


class DemoError(SendtimeError):
    """The demo could not start (port taken, a child process failed)."""


# --------------------------------------------------------------------------- the home's data


def wipe_state(settings: Settings) -> list[Path]:
    """Delete the demo-made state of a home (never the PostgreSQL store, never sendtime.toml)."""
    removed = []
    for part in _STATE_PARTS:
        path = settings.home / part
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def _engine(settings: Settings) -> Any:
    from pipeline.store import engine_for, migrate

    engine = engine_for(settings)
    migrate(engine)
    return engine


def published_version(settings: Settings) -> int:
    from pipeline.store import current_version

    engine = _engine(settings)
    try:
        row = current_version(engine)
    finally:
        engine.dispose()
    return int(row["version"]) if row else 0


def sample_customer_id(settings: Settings) -> str | None:
    """A customer with a published profile: the curl line must work as printed."""
    from sqlalchemy import select

    from pipeline.store import profiles

    engine = _engine(settings)
    try:
        with engine.connect() as conn:
            return conn.execute(select(profiles.c.customer_id).order_by(profiles.c.customer_id).limit(1)).scalar()
    finally:
        engine.dispose()


def sample_ids(settings: Settings, limit: int = 50) -> tuple[list[str], list[str]]:
    """Some published customer ids and in-catalog product ids, for the sample traffic."""
    from sqlalchemy import select

    from pipeline.store import products, profiles

    engine = _engine(settings)
    try:
        with engine.connect() as conn:
            customers = list(
                conn.execute(select(profiles.c.customer_id).order_by(profiles.c.customer_id).limit(limit)).scalars()
            )
            items = list(
                conn.execute(select(products.c.product_id).order_by(products.c.product_id).limit(limit)).scalars()
            )
    finally:
        engine.dispose()
    return customers, items


def _ingested_files(settings: Settings) -> set[tuple[str, str]]:
    from sqlalchemy import select

    from pipeline.store import ingest_batches

    engine = _engine(settings)
    try:
        with engine.connect() as conn:
            return {
                (r.source, r.source_file)
                for r in conn.execute(select(ingest_batches.c.source, ingest_batches.c.source_file))
            }
    finally:
        engine.dispose()


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _generated_files(out: Path) -> dict[str, list[Path]] | None:
    """The files a previous run generated, by source, when the set is complete."""
    found = {source: sorted(out.glob(f"{source}-*.*")) for source in SOURCES_IN_ORDER}
    if any(not files for source, files in found.items() if source != "events"):
        return None
    found["events"] = [p for p in found["events"] if p.suffix in (".jsonl", ".csv")]
    return found if found["events"] else None


def prepare_data(settings: Settings, *, customers: int, events: int, console: Console) -> str:
    """Generate, ingest and run the first cycle, skipping what the home already has."""
    from pipeline.cycle import run_cycle
    from pipeline.generate import generate
    from pipeline.ingest import ingest_files
    from pipeline.store import record_ingest_batch

    version = published_version(settings)
    if version:
        return (
            f"reusing the published state of {settings.home} (version {version}): nothing generated, "
            f"ingested or built; --customers/--events apply to a fresh home (`--fresh` starts over)"
        )

    out = settings.home / "generated"
    with _progress(console) as progress:
        files = _generated_files(out)
        task = progress.add_task("generate synthetic data", total=1, note="")
        if files is None:
            progress.update(task, note=f"{customers} customers, {events} events")
            files = generate(out, customers=customers, events=events, products=min(300, max(20, customers)), seed=42)
        else:
            progress.update(task, note="reusing files generated earlier")
        progress.update(task, completed=1)

        done = _ingested_files(settings)
        todo = [(s, p) for s in SOURCES_IN_ORDER for p in files.get(s, []) if (s, p.name) not in done]
        task = progress.add_task("ingest into the lake", total=max(len(todo), 1), note="")
        engine = _engine(settings)
        received = rejected = 0
        try:
            for source, path in todo:
                progress.update(task, note=f"{source}: {path.name}")
                report = ingest_files(settings, source, [path])
                record_ingest_batch(engine, report.to_dict())
                received += report.received
                rejected += report.rejected
                progress.advance(task)
        finally:
            engine.dispose()
        progress.update(
            task,
            completed=max(len(todo), 1),
            note=f"{received} records, {rejected} quarantined" if todo else "already ingested",
        )

        task = progress.add_task("build, validate, publish", total=1, note="dbt build in-process, GX, publish")
        result = run_cycle(settings)
        progress.update(task, completed=1, note=f"{result.status} in {result.seconds:.1f}s")
    if not result.ok:
        raise DemoError(f"the first cycle did not publish:\n{result.summary()}")
    return (
        f"published version {result.version}: {result.rows_published} rows (profiles, recommendations, products) "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in result.phases.items())})"
    )


def build_docs_with_progress(settings: Settings, console: Console) -> Path:
    from pipeline.transform import build_docs

    with _progress(console) as progress:
        task = progress.add_task("build the dbt docs", total=1, note="dbt docs generate")
        index = build_docs(settings)
        progress.update(task, completed=1, note=index.name)
    return index


# --------------------------------------------------------------------------- child processes


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the demo dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """One `sendtime` subcommand running in its own session, its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: Any = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """The last resort: the child's whole session (gunicorn workers included)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill_group()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_children(
    children: list[Child], *, timeout: float = STOP_TIMEOUT, force: Callable[[], bool] = lambda: False
) -> None:
    """SIGTERM (graceful: gunicorn drains, the scheduler lets a running cycle finish), then a second
    SIGTERM (the scheduler abandons its cycle: safe, a killed cycle leaves nothing behind), then
    SIGKILL of each child's whole session. Returns when every child has exited and been reaped."""
    for child in children:
        child.signal(signal.SIGTERM)
    steps = ((timeout, None), (5.0, signal.SIGTERM), (5.0, signal.SIGKILL))
    for wait, escalate in steps:
        if escalate is not None:
            for child in children:
                if child.alive:
                    child.kill_group() if escalate == signal.SIGKILL else child.signal(escalate)
        deadline = time.monotonic() + wait
        while any(c.alive for c in children) and time.monotonic() < deadline and not force():
            time.sleep(0.1)
        if not any(c.alive for c in children):
            break
    for child in children:
        # gunicorn's workers share the master's session: none may outlive the master
        if child.proc is not None:
            try:
                os.killpg(child.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                pass
            else:
                child.kill_group()
        child.close()


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http(url: str, child: Child, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive:
            raise DemoError(f"{child.name} exited with code {child.proc.returncode}:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise DemoError(f"{child.name} did not answer {url} within {timeout:.0f}s:\n{child.tail()}")


# --------------------------------------------------------------------------- dbt docs over HTTP


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # the docs server's access log is noise here
        pass


@dataclass
class DocsServer:
    """dbt's docs page fetches manifest.json and catalog.json, which browsers refuse over file://:
    the demo serves the target folder on 127.0.0.1 (a thread of the demo process)."""

    directory: Path
    port: int
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        handler = partial(_QuietHandler, directory=str(self.directory))
        self.server = http.server.ThreadingHTTPServer((HOST, self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="docs", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# --------------------------------------------------------------------------- sample traffic


class SampleTraffic(threading.Thread):
    """A few events every interval through the collector (POST /api/v1/events), so the scheduler's
    cycles have something to publish and the status page shows a live pipeline."""

    def __init__(self, base: str, key: str, customers: list[str], products: list[str], interval: float) -> None:
        super().__init__(name="sample-traffic", daemon=True)
        self.url, self.key, self.customers, self.products = base + "/api/v1/events", key, customers, products
        self.interval = max(interval, 1.0)
        self.stopping = threading.Event()
        self.sent = 0
        self.rng = random.Random(7)

    def batch(self) -> list[dict[str, Any]]:
        now = utcnow().isoformat() + "Z"
        out = []
        for _ in range(self.rng.randint(3, 12)):
            kind = self.rng.choice(("product_view", "product_view", "add_to_cart", "page_view"))
            event = {
                "event_id": f"demo-{self.rng.getrandbits(64):016x}",
                "event_type": kind,
                "occurred_at": now,
                "customer_id": self.rng.choice(self.customers),
            }
            if kind != "page_view":
                event["product_id"] = self.rng.choice(self.products)
            out.append(event)
        return out

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            body = json.dumps({"events": self.batch()}).encode()
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    self.sent += int(json.loads(response.read()).get("accepted", 0))
            except (urllib.error.URLError, OSError, ValueError):
                pass  # the API restarting or stopping: try again next time

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)


# --------------------------------------------------------------------------- the demo


def create_demo_key(settings: Settings) -> str:
    from serving.keys import create_key

    key, _ = create_key(settings, "demo-" + utcnow().strftime("%Y%m%dT%H%M%S%f"), DEMO_SCOPES)
    return key


def curl_line(base: str, key: str, customer_id: str) -> str:
    url = f"{base}/api/v1/customers/{urllib.parse.quote(customer_id, safe='')}"
    return f"curl -s -H {shlex.quote('Authorization: Bearer ' + key)} {shlex.quote(url)}"


class _Stop(Exception):
    """SIGTERM, handled like Ctrl-C."""


def run_demo(
    settings: Settings,
    *,
    customers: int,
    events: int,
    every: str,
    port: int,
    fresh: bool = False,
    traffic: bool = True,
    console: Console | None = None,
) -> None:
    """Run the quick start until Ctrl-C or SIGTERM, then stop everything it started.

    Raises DemoError (after stopping everything) when it cannot start or a child dies."""
    console = console or Console(highlight=False, soft_wrap=True)
    parse_duration(every, allow_zero=True)  # a bad --every fails before anything starts (0s: continuous)
    if not port_free(HOST, port):
        raise DemoError(f"port {port} on {HOST} is in use: stop what uses it or pass --port")
    state = {"signals": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        state["signals"] += 1
        if state["signals"] == 1:
            raise _Stop(signum)

    # this process's own JSON log (dbt, GX, the first cycle) goes to a file: the terminal shows
    # the progress bars and the URLs
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    own_log = open(settings.log_dir / "demo.log", "a", encoding="utf-8")
    setup_logging(settings.log_level, stream=own_log)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    docs: DocsServer | None = None
    sample: SampleTraffic | None = None
    failure: DemoError | None = None
    try:
        if fresh:
            removed = wipe_state(settings)
            console.print(f"--fresh: removed {len(removed)} state folders/files of {settings.home}")
        console.print(f"[bold]sendtime demo[/bold] in {settings.home}")
        console.print(prepare_data(settings, customers=customers, events=events, console=console))
        index = build_docs_with_progress(settings, console)
        # the scheduler builds the warehouse from now on: a Spark home's metastore admits one process
        from pipeline.warehouse import warehouse_for

        warehouse_for(settings).release()
        docs_port = port + 1 if port_free(HOST, port + 1) else _free_port(HOST)
        docs = DocsServer(index.parent, docs_port)
        docs.start()

        env = {**os.environ, **settings.env(), "SENDTIME_STATUS_PAGE_ACCESS": "open", "SENDTIME_HOST": HOST}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        base = f"http://{HOST}:{port}"
        api = Child(
            "the API (sendtime serve)",
            ["serve", "--host", HOST, "--port", str(port)],
            env,
            settings.log_dir / "demo-api.log",
        )
        children.append(api)
        api.start()
        wait_http(base + "/health", api)
        scheduler = Child(
            "the scheduler (sendtime schedule)",
            ["schedule", "--every", every],
            env,
            settings.log_dir / "demo-scheduler.log",
        )
        children.append(scheduler)
        scheduler.start()

        key = create_demo_key(settings)
        customer_id = sample_customer_id(settings)
        if customer_id is None:
            raise DemoError("the published state has no profile to show")
        if traffic:
            known_customers, known_products = sample_ids(settings)
            if known_customers and known_products:
                sample = SampleTraffic(
                    base, key, known_customers, known_products, parse_duration(every, allow_zero=True)
                )
                sample.start()
        _print_ready(settings, base, docs, index, key, customer_id, every, api, scheduler, sample is not None)

        while True:
            for child in children:
                if not child.alive:
                    raise DemoError(
                        f"{child.name} stopped unexpectedly (exit {child.proc.returncode}):\n{child.tail()}"
                    )
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        console.print("\nstopping: the scheduler finishes its cycle, the API drains its requests ...")
    except DemoError as exc:
        failure = exc
    finally:
        # a second Ctrl-C while stopping skips the graceful waits
        signal.signal(signal.SIGINT, lambda *_: state.__setitem__("signals", state["signals"] + 1))
        signal.signal(signal.SIGTERM, lambda *_: state.__setitem__("signals", state["signals"] + 1))
        if sample is not None:
            sample.stop()
        stop_children(children, force=lambda: state["signals"] > 1)
        if docs is not None:
            docs.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        setup_logging(settings.log_level)
        own_log.close()
    if failure is not None:
        raise failure
    console.print("sendtime demo stopped; nothing is left running.")


def _print_ready(
    settings: Settings,
    base: str,
    docs: DocsServer,
    index: Path,
    key: str,
    customer_id: str,
    every: str,
    api: Child,
    scheduler: Child,
    traffic: bool,
) -> None:
    """Plain lines (no wrapping, no markup): they are meant to be copied."""
    lines = [
        "",
        "sendtime demo is running. Ctrl-C stops everything.",
        f"  API          {base}/api/v1   (OpenAPI: {base}/openapi.json)",
        f"  status page  {base}/status",
        f"  metrics      {base}/metrics",
        f"  dbt docs     http://{HOST}:{docs.port}/   (files: {index})",
        f"  API key      {key}   (scopes {', '.join(DEMO_SCOPES)}; shown once)",
        f"  scheduler    a cycle every {every} (pid {scheduler.proc.pid}); API pid {api.proc.pid}",
        f"  logs         {settings.log_dir}/demo-api.log, demo-scheduler.log, demo.log",
        *([f"  traffic      a few sample events every {every} through POST {base}/api/v1/events"] if traffic else []),
        "",
        "Try it:",
        curl_line(base, key, customer_id),
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
