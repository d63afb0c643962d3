"""Throw-away PostgreSQL 15 clusters for tests: a primary made with initdb, a streaming replica
made from it with pg_basebackup, each on a free port, stopped and started at will.

The machine's default cluster (tests/conftest.py `pg_server`, port 5432) is shared by other tests;
these clusters are private to one test module, live in a temp folder owned by the `postgres` user
(tests run as root, the server refuses to), listen on 127.0.0.1 only and keep their sockets in
their own folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


def _as_postgres(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    command = ["runuser", "-u", USER, "--", *args] if os.geteuid() == 0 else list(args)
    return subprocess.run(
        command, capture_output=True, text=True, check=check, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _free_port() -> int:
    from tests.helpers.net import free_port

    return free_port()


@dataclass
class Cluster:
    """One PostgreSQL server: its data folder, port and log."""

    root: Path
    name: str
    port: int = field(default_factory=_free_port)

    @property
    def data(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> Cluster:
        _as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port}",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    @property
    def running(self) -> bool:
        return _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the cluster's own socket; returns the unaligned output."""
        out = _as_postgres(
            str(BIN / "psql"),
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        )
        return out.stdout.strip()


class PrimaryAndReplica:
    """A primary (initdb) with an application role and database, and a streaming replica of it
    (pg_basebackup -R). `url` and `read_url` are sendtime's SQLAlchemy URLs of the two."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sendtime-pg-", dir="/tmp"))
        shutil.chown(self.root, USER, USER)
        self.password = secrets.token_hex(8)
        self.primary = Cluster(self.root, "primary")
        self.replica = Cluster(self.root, "replica")

    def _configure(self, cluster: Cluster) -> None:
        conf = cluster.data / "postgresql.conf"
        with open(conf, "a") as fh:
            fh.write(
                f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
                "max_wal_senders = 5\nwal_level = replica\nhot_standby = on\n"
                "wal_receiver_status_interval = 1s\nwal_retrieve_retry_interval = 1s\n"
            )

    def start(self) -> PrimaryAndReplica:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        shutil.chown(pwfile, USER, USER)
        _as_postgres(
            str(BIN / "initdb"),
            "-D",
            str(self.primary.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._configure(self.primary)
        self.primary.start()
        self.primary.psql(f"CREATE ROLE sendtime LOGIN PASSWORD '{self.password}'")
        self.primary.psql("CREATE DATABASE sendtime OWNER sendtime")
        self.primary.psql(f"CREATE ROLE replicator REPLICATION LOGIN PASSWORD '{self.password}'")
        _as_postgres(
            str(BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "replicator",
            "-D",
            str(self.replica.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            env={"PGPASSWORD": self.password},
        )
        self.replica.start()
        return self

    def url(self, cluster: Cluster) -> str:
        return f"postgresql+psycopg://sendtime:{self.password}@127.0.0.1:{cluster.port}/sendtime"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica)

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        target = self.primary.psql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            caught_up = self.replica.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            if caught_up == "t":
                return
            time.sleep(0.1)
        raise AssertionError(f"the replica did not reach {target} in {timeout} s")

    def close(self) -> None:
        for cluster in (self.replica, self.primary):
            cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
