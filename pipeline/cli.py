"""The `sendtime` command. Thin on purpose: parse, call one function, print.

Heavy modules (dbt, Great Expectations, Flask) are imported inside each command so that
`sendtime --help` and `sendtime ingest` start fast; the settings (pydantic-settings, ~0.2 s of CPU to import) are
loaded by the group's callback, which `sendtime --help` does not run.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.errors import SendtimeError
from pipeline.logs import setup_logging

if TYPE_CHECKING:
    from pipeline.config import Settings

SOURCES = ("events", "customers", "orders", "order_items", "products")


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _ensure_home(settings: Settings) -> None:
    from pipeline.config import ensure_home  # already imported by the group's callback
    from pipeline.encryption import check_home

    ensure_home(settings)
    check_home(settings)  # a missing or wrong key is an error now, before anything is written


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    from pipeline.timestamps import parse_timestamp

    parsed = parse_timestamp(value)
    if parsed is None:
        raise click.BadParameter(f"not a timestamp: {value!r}", param_hint="--as-of")
    return parsed


class _Cli(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SendtimeError as exc:
            click.echo(f"sendtime: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Cli)
@click.option(
    "--home",
    envvar="SENDTIME_HOME",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory (default ./.sendtime, or $SENDTIME_HOME).",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """sendtime: fresh customer profiles for email personalization."""
    from pipeline.config import load_settings

    settings = load_settings(home)
    setup_logging(settings.log_level)
    ctx.obj = {"settings": settings}


@main.command()
@click.argument("source", metavar="SOURCE")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def ingest(ctx: click.Context, source: str, files: tuple[Path, ...], as_json: bool) -> None:
    """Validate FILES (.jsonl .json .csv .parquet) of SOURCE into the lake; quarantine bad records.

    SOURCE is one of events, customers, orders, order_items, products.
    """
    from pipeline.ingest import ingest_files

    if source not in SOURCES:
        # one line, not click's usage block: scripts grep this
        raise SendtimeError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")
    settings = _settings(ctx)
    _ensure_home(settings)
    report = ingest_files(settings, source, list(files))
    _record_batch(settings, report.to_dict())
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(report.summary())


def _record_batch(settings: Settings, report: dict) -> None:
    """Count the batch in the online store (metrics, status page). The lake write already
    happened, so a store outage is a warning, not a failed ingest."""
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.store import engine_for, migrate, record_ingest_batch

    engine = engine_for(settings)
    try:
        migrate(engine)
        record_ingest_batch(engine, report)
    except SQLAlchemyError as exc:
        click.echo(f"sendtime: warning: batch not recorded in the online store: {type(exc).__name__}", err=True)
    finally:
        engine.dispose()


@main.command()
@click.option("--as-of", help="The cycle's reference time (ISO-8601 or epoch ms); default now.")
@click.option("--full-refresh", is_flag=True, help="Rebuild every mart from the whole lake.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run(ctx: click.Context, as_of: str | None, full_refresh: bool, as_json: bool) -> None:
    """Run one pipeline cycle: dbt build in-process, validate, publish."""
    from pipeline.cycle import run_cycle

    settings = _settings(ctx)
    _ensure_home(settings)
    result = run_cycle(settings, as_of=_parse_as_of(as_of), full_refresh=full_refresh)
    if as_json:
        _print_json(result.to_dict())
    else:
        click.echo(result.summary())
    if not result.ok:
        sys.exit(1)


@main.command()
@click.option(
    "--repair", is_flag=True, help="Republish what drifted (rebuild the warehouse from the lake first when it drifted)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reconcile(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Compare lake, warehouse and online store row for row; exit 1 on drift (0 once --repair fixed it)."""
    from pipeline.reconcile import reconcile as run_reconcile

    settings = _settings(ctx)
    _ensure_home(settings)
    report = run_reconcile(settings, repair=repair)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def backup(ctx: click.Context, directory: Path, as_json: bool) -> None:
    """Write a consistent, restorable copy of the home into DIRECTORY (a new or empty folder)."""
    from pipeline.backup import backup as run_backup

    settings = _settings(ctx)
    _ensure_home(settings)
    manifest = run_backup(settings, directory)
    if as_json:
        _print_json(manifest.summary())
    else:
        click.echo(manifest.summary_text())


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def restore(ctx: click.Context, directory: Path, as_json: bool) -> None:
    """Restore the backup in DIRECTORY into this (empty) home and its (empty) online store."""
    from pipeline.backup import restore as run_restore

    settings = _settings(ctx)
    _ensure_home(settings)
    result = run_restore(settings, directory)
    if as_json:
        _print_json(result)
    else:
        click.echo(
            f"restored {result['files']} files ({result['bytes']} bytes) and the online store from "
            f"{directory} (backup of {result['created_at']}, published version {result['version']})"
        )


@main.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List the latest pipeline cycles from the run log (and the Kafka topics' totals)."""
    from pipeline.consume_log import format_topic_totals
    from pipeline.runlog import format_runs, read_runs

    cycles = read_runs(_settings(ctx), limit=limit)
    topics = _kafka_totals(_settings(ctx))
    if as_json:
        # an object, so that the Kafka totals sit beside the cycles (`kafka_topics` is [] without Kafka)
        _print_json({"runs": [cycle.to_dict() for cycle in cycles], "kafka_topics": topics})
    else:
        click.echo(format_runs(cycles))
        if topics:
            click.echo("\n" + format_topic_totals(topics))


def _kafka_totals(settings: Settings) -> list[dict[str, Any]]:
    """Per Kafka topic: received = accepted + rejected + skipped ([] until `consume` has run)."""
    from pipeline.consume_log import topic_totals
    from pipeline.store import engine_for

    engine = engine_for(settings)
    try:
        return topic_totals(engine)
    finally:
        engine.dispose()


@main.command()
@click.option(
    "--bootstrap-servers", default=None, help="Kafka brokers host:port,... (default: kafka_bootstrap_servers)."
)
@click.option("--topics", default=None, help="SOURCE=TOPIC,... replacing the kafka_topics map.")
@click.pass_context
def consume(ctx: click.Context, bootstrap_servers: str | None, topics: str | None) -> None:
    """Read Kafka topics into the lake until SIGTERM or Ctrl-C (exactly once; one per home)."""
    from pipeline.consume import run_consume

    settings = _settings(ctx)
    _ensure_home(settings)
    summary = run_consume(settings, bootstrap_servers=bootstrap_servers, topics=topics)
    click.echo(summary.text())


@main.command()
@click.option(
    "--every",
    default=None,
    help="Interval, e.g. 5m, 30s, 5s; 0s runs continuously: a cycle as soon as a batch lands (default from settings).",
)
@click.option("--as-of", "as_of", default=None, hidden=True)
@click.pass_context
def schedule(ctx: click.Context, every: str | None, as_of: str | None) -> None:
    """Run pipeline cycles on a schedule until SIGTERM or Ctrl-C."""
    from pipeline.scheduler import run_scheduler

    settings = _settings(ctx)
    _ensure_home(settings)
    run_scheduler(settings, every=every or settings.schedule_every)


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=None)
@click.option(
    "--certfile",
    type=click.Path(path_type=Path),
    default=None,
    help="TLS certificate (PEM): serve HTTPS only, TLS 1.2+ (setting tls_certfile).",
)
@click.option(
    "--keyfile",
    type=click.Path(path_type=Path),
    default=None,
    help="The certificate's private key (PEM) (setting tls_keyfile).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    certfile: Path | None,
    keyfile: Path | None,
) -> None:
    """Serve the API with gunicorn (production mode). Serves only: runs no cycles."""
    from serving.server import serve as serve_api

    settings = _settings(ctx)
    _ensure_home(settings)
    serve_api(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        certfile=certfile,
        keyfile=keyfile,
    )


@main.group()
def keys() -> None:
    """Manage API keys (stored hashed; a key is shown once)."""


@keys.command("create")
@click.option("--name", required=True)
@click.option(
    "--scopes", default="profiles:read", show_default=True, help="Comma list of profiles:read, events:write, admin."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_create(ctx: click.Context, name: str, scopes: str, as_json: bool) -> None:
    from serving.keys import create_key

    settings = _settings(ctx.find_root())
    _ensure_home(settings)
    key, record = create_key(settings, name, [s.strip() for s in scopes.split(",") if s.strip()])
    if as_json:
        _print_json({**record, "key": key})
    else:
        click.echo(f"created key {name!r} with scopes {record['scopes']}; it is shown once:\n{key}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    from serving.keys import list_keys

    rows = list_keys(_settings(ctx.find_root()))
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row.get("revoked_at") else "active"
        click.echo(f"{row['name']:24} {row['key_prefix']:12} {','.join(row['scopes']):40} {state}")


@keys.command("revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    from serving.keys import revoke_key

    if not revoke_key(_settings(ctx.find_root()), name):
        raise SendtimeError(f"no active key named {name!r}")
    click.echo(f"revoked key {name!r}")


@main.command()
@click.argument("new_key_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rekey(ctx: click.Context, new_key_file: Path, as_json: bool) -> None:
    """Re-encrypt the home (lake, quarantine, warehouse) with NEW_KEY_FILE; then point
    encryption_key_file at it. Stop the scheduler, the API and consumers first (docs/privacy.md)."""
    from pipeline.config import ensure_home
    from pipeline.rekey import rekey as rekey_home

    settings = _settings(ctx)
    ensure_home(settings)
    report = rekey_home(settings, new_key_file)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(
            f"re-encrypted {report.files} files ({report.skipped} already done) and "
            f"{'the warehouse' if report.warehouse else 'no warehouse'} with key id {report.key_id}: "
            f"now set encryption_key_file to {new_key_file}"
        )


@main.group()
def clients() -> None:
    """Manage OAuth 2.0 clients (client credentials; the secret is shown once, stored hashed)."""


@clients.command("create")
@click.option("--name", required=True)
@click.option(
    "--scopes", default="profiles:read", show_default=True, help="Comma list of profiles:read, events:write, admin."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clients_create(ctx: click.Context, name: str, scopes: str, as_json: bool) -> None:
    from serving.clients import create_client

    settings = _settings(ctx.find_root())
    _ensure_home(settings)
    client_id, secret, record = create_client(settings, name, [s.strip() for s in scopes.split(",") if s.strip()])
    if as_json:
        _print_json({**record, "client_secret": secret})
    else:
        click.echo(
            f"created client {name!r} with scopes {record['scopes']}; the secret is shown once:\n"
            f"client_id     {client_id}\nclient_secret {secret}"
        )


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clients_list(ctx: click.Context, as_json: bool) -> None:
    from serving.clients import list_clients

    rows = list_clients(_settings(ctx.find_root()))
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row.get("revoked_at") else "active"
        click.echo(f"{row['name']:24} {row['client_id']:28} {','.join(row['scopes']):40} {state}")


@clients.command("revoke")
@click.argument("name")
@click.pass_context
def clients_revoke(ctx: click.Context, name: str) -> None:
    from serving.clients import revoke_client

    if not revoke_client(_settings(ctx.find_root()), name):
        raise SendtimeError(f"no active client named {name!r}")
    click.echo(f"revoked client {name!r}: its tokens stop working now")


@main.command()
@click.argument("customer_ids", nargs=-1, required=True, metavar="CUSTOMER_ID...")
@click.option("--status", "show_status", is_flag=True, help="Print complete or pending for one id.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def forget(ctx: click.Context, customer_ids: tuple[str, ...], show_status: bool, as_json: bool) -> None:
    """Erase customers everywhere (GDPR): the next cycle removes every trace (docs/privacy.md)."""
    from pipeline.erasure import forget_status, request_forget

    settings = _settings(ctx)
    _ensure_home(settings)
    if show_status:
        if len(customer_ids) != 1:
            raise SendtimeError("--status takes one CUSTOMER_ID")
        state = forget_status(settings, customer_ids[0])
        if state is None:  # never requested: neither complete nor pending
            click.echo("sendtime: error: no erasure of this customer id was requested", err=True)
            sys.exit(1)
        _print_json({"customer_id": customer_ids[0], "status": state}) if as_json else click.echo(state)
        return
    results = request_forget(settings, list(customer_ids))
    if as_json:
        _print_json([r.to_dict() for r in results])
        return
    for r in results:
        found = f"found in {r.files} lake/quarantine file{'s' if r.files != 1 else ''}" if r.files else "nothing found"
        click.echo(f"{r.customer_id}: erasure {r.status}: {found}; the next cycle removes every trace")


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default $SENDTIME_HOME/generated).",
)
@click.option("--customers", default=2_000, show_default=True)
@click.option("--events", default=100_000, show_default=True)
@click.option("--products", default=300, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="File format of the events file.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def generate(
    ctx: click.Context,
    out_dir: Path | None,
    customers: int,
    events: int,
    products: int,
    seed: int,
    fmt: str,
    as_json: bool,
) -> None:
    """Generate realistic synthetic source files (same seed, same data)."""
    from pipeline.generate import generate as generate_data

    settings = _settings(ctx)
    out = out_dir or settings.home / "generated"
    files = generate_data(out, customers=customers, events=events, products=products, seed=seed, events_format=fmt)
    if as_json:
        _print_json({k: [str(p) for p in v] for k, v in files.items()})
    else:
        for source, paths in files.items():
            for path in paths:
                click.echo(f"{source:12} {path}")


@main.command()
@click.option("--customers", default=2_000, show_default=True)
@click.option("--events", default=100_000, show_default=True)
@click.option("--every", default="10s", show_default=True)
@click.option("--port", type=int, default=None)
@click.option("--fresh", is_flag=True, help="Wipe the home's data first (keeps sendtime.toml).")
@click.option(
    "--warehouse",
    type=click.Choice(["duckdb", "spark"]),
    default=None,
    help="The warehouse engine (setting `warehouse`; docs/spark.md).",
)
@click.pass_context
def demo(
    ctx: click.Context, customers: int, events: int, every: str, port: int | None, fresh: bool, warehouse: str | None
) -> None:
    """The quick start: generate, ingest, build, validate, publish, then serve with the scheduler."""
    from pipeline.demo import run_demo

    settings = _settings(ctx)
    if warehouse is not None:
        settings = settings.replace(warehouse=warehouse)
    _ensure_home(settings)
    run_demo(settings, customers=customers, events=events, every=every, port=port or settings.port, fresh=fresh)


@main.command()
@click.pass_context
def docs(ctx: click.Context) -> None:
    """Build dbt docs (lineage of every model) under SENDTIME_HOME and say where to open them."""
    from pipeline.transform import build_docs

    settings = _settings(ctx)
    _ensure_home(settings)
    index = build_docs(settings)
    click.echo(f"dbt docs built: open {index} (or run `dbt docs serve --target-path {index.parent}`)")


if __name__ == "__main__":
    main()
