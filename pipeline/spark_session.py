"""The SparkSession of `warehouse = "spark"` (docs/models.md "Spark").

dbt-spark's `session` method builds its session with `SparkSession.builder.enableHiveSupport()`
and the target's `server_side_parameters`, on every statement, through `getOrCreate()`. The
static settings (master, jars, warehouse and metastore folders, Delta's extension and catalog)
only count when the session starts, so this module starts it first, from the very same target in
profiles.yml (rendered by dbt for this home) plus the `spark_conf` settings, checks what a missing
install would otherwise turn into a Java stack trace, and dbt's `getOrCreate()` then returns it.

One process holds one Spark session (one JVM, one metastore), so it serves one SENDTIME_HOME:
asking for another home raises until `stop()`.
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGET = "spark"
FETCH_JARS = "scripts/fetch-spark-jars.sh"

_LOCK = threading.Lock()
_HOME: Path | None = None


class SparkSetupError(RuntimeError):
    """Spark cannot start: pyspark, Java or the Delta jars are missing, or another home owns the session."""


def spark_target(
    home: Path, extra: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, object]:
    """The spark target of profiles.yml rendered for this home (`env`: the variables it reads,
    over the process's), with `extra` (the spark_conf settings) among its server_side_parameters."""
    from dbt.config.profile import read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    set_invocation_context({**os.environ, **(env or {}), "SENDTIME_HOME": str(home.absolute())})
    raw = read_profile(str(PROJECT_DIR))
    target = dict(ProfileRenderer({}).render_data(raw["sendtime"]["outputs"][TARGET]))
    conf = {str(key): str(value) for key, value in target["server_side_parameters"].items()}
    conf.update({str(key): str(value) for key, value in (extra or {}).items()})
    target["server_side_parameters"] = conf
    return target


def session_conf(
    home: Path, extra: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The spark target's server_side_parameters for this home, then `extra` (the spark_conf settings)."""
    conf = dict(spark_target(home, extra, env)["server_side_parameters"])  # type: ignore[call-overload]
    # what dbt-spark sets on every statement anyway (its credentials force it)
    conf["spark.sql.ansi.enabled"] = "false"
    return conf


def write_profile(folder: Path, target: Mapping[str, object]) -> Path:
    """A profiles.yml holding only this rendered spark target, for dbt's --profiles-dir: dbt-spark
    sets server_side_parameters again on every statement, so the spark_conf settings must be among
    them or the project's values would come back."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"sendtime": {"target": TARGET, "outputs": {TARGET: dict(target)}}}, sort_keys=True)
    path = folder / "profiles.yml"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(".profiles.yml.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return folder


def _check_install(conf: Mapping[str, str]) -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkSetupError("pyspark is not installed: pip install -e '.[spark]'") from exc
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkSetupError("Spark needs Java 17 or 21 (java on PATH or JAVA_HOME)")
    for pattern in filter(None, conf.get("spark.jars", "").split(",")):
        if not glob.glob(pattern):
            raise SparkSetupError(f"the Delta Lake jars are missing ({pattern}): run {FETCH_JARS}")


def get_session(
    home: Path, extra: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> SparkSession:
    """This process's SparkSession for `home`, started on first use."""
    global _HOME
    home = home.absolute()
    with _LOCK:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None and _HOME is not None:
            if _HOME != home:
                raise SparkSetupError(f"this process's Spark session serves {_HOME}, not {home}: stop() it first")
            return active
        if (home / "encryption.json").exists():
            # docs/privacy.md "Spark": the lake is encrypted Parquet that only DuckDB reads with the
            # key; Spark's Parquet encryption needs a KMS. Never a silent plaintext Delta warehouse.
            raise SparkSetupError(
                "encryption at rest (encryption_key_file) is not supported with the Spark "
                "warehouse: use warehouse storage encryption on the cluster (docs/privacy.md)"
            )
        conf = session_conf(home, extra, env)
        _check_install(conf)
        (home / "spark").mkdir(parents=True, exist_ok=True)
        builder = SparkSession.builder.enableHiveSupport()
        for key, value in conf.items():
            builder = builder.config(key, value)
        session = _start_with_stdout_on_stderr(builder)
        session.sparkContext.setLogLevel("ERROR")
        _HOME = home
        return session


def _start_with_stdout_on_stderr(builder: SparkSession.Builder) -> SparkSession:
    """Start the JVM with its standard output on this process's standard error: the JVM prints to
    stdout (Delta's VACUUM says what it deleted), and a command's stdout is its answer (`--json`)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # the JVM, a child process started now, inherits this stdout
        return builder.getOrCreate()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def stop() -> None:
    """Stops this process's Spark session and its JVM (a later get_session starts new ones)."""
    global _HOME
    with _LOCK:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
        gateway = SparkContext._gateway
        if gateway is not None:
            gateway.shutdown()
            process = getattr(gateway, "proc", None)
            if process is not None:
                if process.stdin is not None:
                    process.stdin.close()  # the JVM exits at end of input
                process.wait(timeout=30)
            SparkContext._gateway = None
            SparkContext._jvm = None
        _HOME = None


def driver_pid() -> int | None:
    """The local JVM's process id (for measurements), when this process started one."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None) if gateway is not None else None
    return process.pid if process is not None else None
