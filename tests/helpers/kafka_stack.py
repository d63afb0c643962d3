"""The Kafka test stack, started by the tests themselves (no Docker): a single-node Kafka broker in
KRaft mode, Kafka Connect standalone with Debezium's PostgreSQL connector, and a PostgreSQL 15
cluster of the tests' own holding the `shop` database.

Each JVM starts once per test session (session fixtures at the bottom; `tests/conftest.py` loads
this module as a pytest plugin). Every process runs in its own process group on free ports with
its state in a temporary folder, and the whole group is killed at teardown, so several engineers'
suites can share the machine. The jars come from `scripts/fetch-jars.sh` (deploy/kafka/pom.xml);
the fixtures run it when the cache is missing: a missing part fails the tests, it never skips them.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.helpers.cli import ROOT
from tests.helpers.net import free_port

KAFKA_VERSION = "4.4.0"
DEBEZIUM_VERSION = "3.6.1.Final"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Small heaps, serial GC and C1 only: these JVMs move little data, and start-up is the CI cost.
JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]

# How long each part took to start in this session (seconds): the tests report it.
STARTUP_SECONDS: dict[str, float] = {}


def jars_dir() -> Path:
    return Path(os.environ.get("SENDTIME_JARS_DIR") or Path.home() / ".cache" / "sendtime" / "jars")


def ensure_jars() -> tuple[Path, Path]:
    """(broker + Connect classpath folder, Debezium plugin folder); fetched when missing."""
    kafka = jars_dir() / f"kafka-{KAFKA_VERSION}"
    plugins = jars_dir() / f"debezium-{DEBEZIUM_VERSION}"
    if not (kafka / ".complete").is_file() or not (plugins / "debezium-connector-postgres" / ".complete").is_file():
        proc = subprocess.run([str(ROOT / "scripts" / "fetch-jars.sh")], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"scripts/fetch-jars.sh failed:\n{proc.stderr[-3000:]}")
    return kafka, plugins


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is not installed (scripts/fetch-jars.sh installs OpenJDK 17)")
    return java


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Signal the process group we created for `proc` and wait for the leader."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} in {timeout:.0f}s:\n{_tail(log)}")


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _log4j2(path: Path, log_file: Path) -> Path:
    path.write_text(
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = file\n"
        "logger.reflections.name = org.reflections\nlogger.reflections.level = ERROR\n"
    )
    return path


# --- the broker ---------------------------------------------------------------------------------


@dataclass
class KafkaBroker:
    """One KRaft node (broker and controller). `restart()` keeps its data folder and ports."""

    workdir: Path
    classpath: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def _properties(self) -> Path:
        path = self.workdir / "server.properties"
        path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    "num.partitions=1",
                    "auto.create.topics.enable=true",
                    # one node: every internal topic has one replica, and few partitions (fast group start)
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.segment.bytes=67108864",
                    # after a kill -9 the controller waits for the dead broker's session to expire before
                    # the restarted one may register: 2 s instead of 9 s
                    "broker.session.timeout.ms=2000",
                    "broker.heartbeat.interval.ms=500",
                    "",
                ]
            )
        )
        return path

    def _java(self, main: str, *args: str, log: Path) -> list[str]:
        log4j = _log4j2(self.workdir / f"log4j2-{log.stem}.properties", log)
        return [_java(), *JVM_OPTS, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.classpath}/*", main, *args]

    def format(self) -> None:
        """`kafka-storage format` through its Java main class; the cluster id is made here (no JVM for it)."""
        props = self._properties()
        # "=" form: a base64 id may start with "-", which argparse would take for an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(props),
                log=self.workdir / "storage.log",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed:\n{proc.stdout}\n{proc.stderr}")

    def start(self, timeout: float = 90) -> KafkaBroker:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "data" / "meta.properties").exists():
            self.format()
        props = self._properties()
        self._out = open(self.workdir / "broker.stdout", "ab")
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(props), log=self.log_path),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, self.log_path, timeout, "the Kafka broker")
        self.wait_ready(timeout - (time.monotonic() - started))
        STARTUP_SECONDS.setdefault("kafka_broker", round(time.monotonic() - started, 2))
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """The broker answers metadata requests (the port opens a little before that)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + max(timeout, 5)
        while True:
            try:
                meta = admin.list_topics(timeout=2)
                if meta.brokers:
                    return
            except Exception:  # noqa: BLE001 - not up yet: try again
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Kafka broker did not become ready:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self, *, hard: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (`hard`: a crash) of the broker's process group."""
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL if hard else signal.SIGTERM, timeout=60)
            self.proc = None
        if getattr(self, "_out", None):
            self._out.close()
            self._out = None

    def restart(self, *, hard: bool = False) -> float:
        """Stop and start on the same data folder and ports; returns the seconds it was down."""
        started = time.monotonic()
        self.stop(hard=hard)
        self.start()
        return time.monotonic() - started

    # -- helpers for tests --
    def create_topic(
        self, name: str, partitions: int = 1, timeout: float = 30, config: dict[str, str] | None = None
    ) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=timeout)
        self._wait_partitions(admin, name, partitions, timeout)

    def add_partitions(self, name: str, total: int, timeout: float = 30) -> None:
        from confluent_kafka.admin import AdminClient, NewPartitions

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_partitions([NewPartitions(name, total)])[name].result(timeout=timeout)
        self._wait_partitions(admin, name, total, timeout)

    @staticmethod
    def _wait_partitions(admin: object, name: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(topic=name, timeout=5).topics.get(name)  # type: ignore[attr-defined]
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == count
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"topic {name} did not reach {count} partitions")

    def end_offsets(self, topic: str) -> dict[int, int]:
        """{partition: high watermark} of a topic."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "sendtime-tests-probe", "enable.auto.commit": False}
        )
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(meta.partitions)
            }
        finally:
            consumer.close()


# --- PostgreSQL -----------------------------------------------------------------------------------

SHOP_SCHEMA = """
CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    email text, first_name text, last_name text,
    country char(2), locale text, timezone text,
    marketing_consent boolean,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    order_id text PRIMARY KEY,
    customer_id text REFERENCES customers ON DELETE SET NULL,
    status text NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded')),
    currency char(3) NOT NULL,
    total_amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_items (
    order_item_id text PRIMARY KEY,
    order_id text NOT NULL REFERENCES orders ON DELETE CASCADE,
    product_id text NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(12, 2) NOT NULL
);
-- the connector's role: replication and read access only (docs/kafka.md)
CREATE ROLE sendtime_cdc WITH LOGIN REPLICATION PASSWORD 'cdc-password';
GRANT SELECT ON customers, orders, order_items TO sendtime_cdc;
-- created by the tables' owner, so the connector needs no ownership (publication.autocreate.mode=disabled)
CREATE PUBLICATION sendtime_shop FOR TABLE customers, orders, order_items;
"""


@dataclass
class Postgres:
    """A PostgreSQL 15 cluster of the tests' own (initdb + pg_ctl) with `wal_level = logical`,
    run as the `postgres` user (the server refuses root), on a free port, in a temporary folder."""

    workdir: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def _run(self, args: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            user=self.user,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
            **kwargs,
        )  # type: ignore[call-overload]

    def start(self) -> Postgres:
        started = time.monotonic()
        if not (PG_BIN / "postgres").exists():
            pytest.fail(f"{PG_BIN}/postgres is missing (scripts/system-deps.sh installs postgresql-15)")
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            pytest.fail(f"no {self.user} user (scripts/system-deps.sh installs postgresql-15)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        proc = self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{proc.stdout}\n{proc.stderr}")
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write(
                "\n".join(
                    [
                        "",
                        f"port = {self.port}",
                        "listen_addresses = '127.0.0.1'",
                        f"unix_socket_directories = '{self.workdir}'",
                        "wal_level = logical",
                        "max_wal_senders = 4",
                        "max_replication_slots = 4",
                        # a test cluster: speed over durability (the data is thrown away)
                        "fsync = off",
                        "synchronous_commit = off",
                        "full_page_writes = off",
                        "shared_buffers = 32MB",
                        "",
                    ]
                )
            )
        # pg_ctl's -w waits until the server accepts connections; the server gets its own session
        proc = self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.workdir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            start_new_session=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed:\n{proc.stdout}\n{proc.stderr}\n{_tail(self.workdir / 'server.log')}"
            )
        self.psql("CREATE DATABASE shop")
        self.psql(SHOP_SCHEMA, database="shop")
        STARTUP_SECONDS.setdefault("postgres", round(time.monotonic() - started, 2))
        return self

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = self._run(
            [
                str(PG_BIN / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
            ],
            input=sql,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr}")
        return proc.stdout


# --- Kafka Connect standalone ---------------------------------------------------------------------


@dataclass
class KafkaConnect:
    """Kafka Connect in standalone mode, Debezium's plugin folder on its plugin.path, REST on a
    free port. Connectors are created through the REST API, as a user would."""

    workdir: Path
    classpath: Path
    plugin_path: Path
    bootstrap: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "connect.log"

    def start(self, timeout: float = 120) -> KafkaConnect:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        worker = self.workdir / "worker.properties"
        worker.write_text(
            "\n".join(
                [
                    f"bootstrap.servers={self.bootstrap}",
                    f"listeners=http://127.0.0.1:{self.port}",
                    f"offset.storage.file.filename={self.workdir / 'connect.offsets'}",
                    "offset.flush.interval.ms=1000",
                    f"plugin.path={self.plugin_path}",
                    # plugins declare themselves in META-INF/services: no classpath scan (seconds saved)
                    "plugin.discovery=service_load",
                    "key.converter=org.apache.kafka.connect.json.JsonConverter",
                    "value.converter=org.apache.kafka.connect.json.JsonConverter",
                    "",
                ]
            )
        )
        log4j = _log4j2(self.workdir / "log4j2.properties", self.log_path)
        cmd = [
            _java(),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.classpath}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(worker),
        ]
        self._out = open(self.workdir / "connect.stdout", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka Connect exited {self.proc.returncode}:\n{_tail(self.log_path)}"
                    f"\n{_tail(self.workdir / 'connect.stdout')}"
                )
            try:
                plugins = requests.get(f"{self.url}/connector-plugins", timeout=2)
                if plugins.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka Connect did not start:\n{_tail(self.log_path)}")
            time.sleep(0.2)
        classes = [p["class"] for p in plugins.json()]
        if "io.debezium.connector.postgresql.PostgresConnector" not in classes:
            raise RuntimeError(f"Debezium's PostgresConnector is not among Connect's plugins: {classes}")
        STARTUP_SECONDS.setdefault("kafka_connect", round(time.monotonic() - started, 2))
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGTERM)
            self.proc = None
        if getattr(self, "_out", None):
            self._out.close()
            self._out = None

    def create_connector(self, name: str, config: dict[str, str], timeout: float = 60) -> None:
        """PUT /connectors/{name}/config (create or update), then wait until its task runs."""
        response = requests.put(f"{self.url}/connectors/{name}/config", json=config, timeout=30)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"Connect refused the connector: {response.status_code} {response.text}")
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = requests.get(f"{self.url}/connectors/{name}/status", timeout=10).json()
            tasks = status.get("tasks") or []
            if any(t.get("state") == "FAILED" for t in tasks) or status.get("connector", {}).get("state") == "FAILED":
                raise RuntimeError(f"connector failed: {json.dumps(status)[:4000]}")
            if tasks and all(t.get("state") == "RUNNING" for t in tasks):
                return
            time.sleep(0.2)
        raise RuntimeError(f"connector did not start: {json.dumps(status)[:2000]}\n{_tail(self.log_path)}")

    def delete_connector(self, name: str) -> None:
        requests.delete(f"{self.url}/connectors/{name}", timeout=30)


# --- session fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_jars() -> tuple[Path, Path]:
    return ensure_jars()


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    # not under pytest's tmp (mode 0700 for root): the postgres user must reach its folder
    path = Path(tempfile.mkdtemp(prefix="sendtime-kafka-stack-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_consumer_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave a `sendtime consume` running."""
    yield
    from tests.helpers.consumer import ConsumerProcess

    ConsumerProcess.kill_all()


@pytest.fixture(scope="session")
def kafka_broker(kafka_jars: tuple[Path, Path], stack_dir: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(stack_dir / "kafka", kafka_jars[0])
    try:
        broker.start()
        yield broker
    finally:
        broker.stop(hard=True)


@pytest.fixture(scope="session")
def shop_postgres(stack_dir: Path) -> Iterator[Postgres]:
    pg = Postgres(stack_dir / "postgres")
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def kafka_connect(kafka_jars: tuple[Path, Path], kafka_broker: KafkaBroker, stack_dir: Path) -> Iterator[KafkaConnect]:
    connect = KafkaConnect(stack_dir / "connect", kafka_jars[0], kafka_jars[1], kafka_broker.bootstrap)
    try:
        connect.start()
        yield connect
    finally:
        connect.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Start-up time of each part this session started (the CI budget watches it)."""
    if STARTUP_SECONDS:
        terminalreporter.write_line(
            "kafka test stack start-up (s): " + ", ".join(f"{k} {v}" for k, v in STARTUP_SECONDS.items())
        )
