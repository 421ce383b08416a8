#!/usr/bin/env python3
"""Paycast entry point.

    python run.py [serve]             start the server (embedded PostgreSQL unless PAYCAST_DATABASE_URL)
    python run.py serve --workers N   N server processes on one port (SO_REUSEPORT), supervised
    python run.py serve --role api    run one role: all (default) | api | realtime | worker (or PAYCAST_ROLE)
    python run.py migrate             apply database migrations and exit
    python run.py merchant create NAME  create a merchant and print its API key
    python run.py check               verify the invariants (docs/architecture.md) in the database (exit 1 if violated)
    python run.py simulate [--url …]  drive realistic demo traffic against a running server
    python run.py simulate --chaos --seed N [--topology single|workers:N|roles]
                                      seeded chaos run (own servers; faults; ends with every invariant)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import secrets
import signal
import sys

import trio

from actors import collector
from config import SettingsError, load_settings
from config.roles import Role
from domain.errors import Unavailable
from pg import migrate
from pg.cluster import EmbeddedPostgres, EmbeddedPostgresError
from pg.supervisor import supervise
from processes.workers import serve_workers
from storage import invariants, merchants, secrets_box, webhook_deliveries
from storage.database import Database
from storage.secrets_box import SecretsKeyError, load_box
from telemetry import logs, metrics, tracing
from telemetry.tasks import TaskTracer
from tools import chaos, simulate

log = logging.getLogger("paycast")
# How long start-up waits for a database that is not reachable yet.
_DB_WAIT_S = 30


def resolve_database(settings):
    """The DSN to use and, for the embedded server, its handle and this process's lease on it.

    Every process using the embedded server holds a lease on it (it dies with
    the process, even on kill -9); releasing the last lease stops the server,
    so a one-shot command run beside a live server leaves it running.
    """
    if settings.database_url:
        return settings.database_url, None, None
    pg = EmbeddedPostgres(settings.data_dir.resolve())
    try:
        lease = pg.acquire()
    except EmbeddedPostgresError as exc:
        print(f"paycast: cannot start the embedded PostgreSQL: {exc}", file=sys.stderr)
        sys.exit(1)
    try:
        pg.ensure_database("paycast")
    except EmbeddedPostgresError as exc:
        lease.release()
        print(f"paycast: cannot create the paycast database: {exc}", file=sys.stderr)
        sys.exit(1)
    return pg.dsn("paycast"), pg, lease


async def open_database(settings, dsn: str):
    """Open the pool and apply migrations, waiting a while for the database."""
    db = Database(dsn, pool_size=settings.db_pool_size, statement_timeout_ms=settings.db_statement_timeout_ms,
                  connect_timeout_s=settings.db_connect_timeout_s,
                  session_settings=webhook_deliveries.session_settings(settings.retry_schedule))
    await db.open()
    deadline = trio.current_time() + _DB_WAIT_S
    while True:
        try:
            applied = await db.run(migrate.apply)
            break
        except Unavailable:
            if trio.current_time() > deadline:
                await db.close()
                raise
            log.warning("database not reachable yet; retrying")
            await trio.sleep(1)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return db


async def _watch_signals(shutdown: trio.Event, root: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                log.info("received %s: draining", signal.Signals(signum).name)
                shutdown.set()
            else:  # a second signal: stop now
                root.cancel()


async def _close_websockets_on(shutdown: trio.Event, components) -> None:
    """Draining: tell WebSocket clients to go (1001) so hypercorn's graceful wait ends early."""
    await shutdown.wait()
    components.realtime.close_all()


async def serve_main(settings, dsn: str, admin_token: str, pg=None, box=None) -> None:
    # The one lazy import: the HTTP stack and every component (quart, hypercorn,
    # pydantic models, connector SDKs) take about 1.5 s to import, which only
    # `serve` needs; one-shot commands (check, migrate, merchant create,
    # simulate, --help), run often beside a live server, do not pay it.
    from app.server import create_app, serve_http
    from components import build_components

    db = await open_database(settings, dsn)
    try:
        # A wrong key fails here, at start, not as a 500 later (storage/secrets_box.py).
        await db.run(secrets_box.prepare, box)
        components = build_components(settings, db, secrets=box)
        async with trio.open_nursery() as root:
            await root.start(components.run, name="actors")
            shutdown = trio.Event()
            root.start_soon(_watch_signals, shutdown, root.cancel_scope, name="signals")
            root.start_soon(_close_websockets_on, shutdown, components, name="realtime-drain")
            if pg is not None:
                root.start_soon(supervise, pg, name="embedded-pg-supervisor")
            app = create_app(components, admin_token)

            async def http(task_status=trio.TASK_STATUS_IGNORED) -> None:
                await serve_http(app, settings.host, settings.port, shutdown,
                                 graceful_timeout=settings.graceful_timeout_s, reuse_port=settings.reuse_port,
                                 certfile=settings.tls_certfile, keyfile=settings.tls_keyfile,
                                 task_status=task_status)
                root.cancel_scope.cancel()  # HTTP drained: stop the actors too

            binds = await root.start(http, name="http")
            metrics.observe_gc_pauses()  # first: the start-up collection below is the first one timed
            if settings.gc_tuning:
                collector.tune()
                await root.start(functools.partial(collector.collect_young, freeze_every=collector.FREEZE_EVERY
                                                   if settings.gc_freeze else 0), name="actor:gc-young")
            components.set_base_url(binds[0])
            print(json.dumps({"event": "listening", "url": binds[0], "role": str(settings.role),
                              "admin_token_set": bool(settings.admin_token)}), flush=True)
            log.info("Paycast (role %s) listening on %s", settings.role, binds[0])
    finally:
        with trio.CancelScope(shield=True):
            await db.close()
        log.info("stopped")


def cmd_serve(settings) -> int:
    admin_token = settings.admin_token
    if not admin_token:
        admin_token = "adm_" + secrets.token_urlsafe(24)
        print(f"PAYCAST_ADMIN_TOKEN is unset; admin token for this run: {admin_token}", flush=True)
    try:  # before the database: an external one without a key is refused outright
        box = load_box(settings.secrets_key, external_database=bool(settings.database_url),
                       data_dir=settings.data_dir.resolve())
    except SecretsKeyError as exc:
        print(f"paycast: {exc}", file=sys.stderr)
        return 2
    dsn, pg, lease = resolve_database(settings)
    if settings.workers > 1:
        try:  # the parent's lease keeps the embedded server up while workers come and go
            return serve_workers(settings, dsn, admin_token, embedded=pg is not None)
        finally:
            if lease is not None:
                lease.release()
    instruments = []
    if settings.trace_tasks:
        instruments.append(TaskTracer())
    try:
        tracing.configure(settings.otel_exporter)
    except tracing.TracingConfigError as exc:
        print(f"paycast: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(serve_main, settings, dsn, admin_token, pg, box, instruments=instruments)
    except SecretsKeyError as exc:
        print(f"paycast: {exc}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()  # flush spans still queued for the exporter
        if lease is not None:
            lease.release()
    return 0


def with_database(settings, work):
    """Run ``await work(db)`` against the configured database (migrated), for one-shot commands.

    Uses the embedded PostgreSQL when no ``PAYCAST_DATABASE_URL`` is set: starts
    it if nobody runs it, and stops it at the end only if no other process
    (e.g. a live server) still uses it.

    Returns:
      What ``work`` returned.
    """
    dsn, _pg, lease = resolve_database(settings)

    async def main():
        db = await open_database(settings, dsn)
        try:
            return await work(db)
        finally:
            await db.close()

    try:
        return trio.run(main)
    finally:
        if lease is not None:
            lease.release()


def cmd_migrate(settings) -> int:
    async def nothing(db) -> None:  # opening the database applies the migrations
        return None

    with_database(settings, nothing)
    print("migrations applied")
    return 0


def cmd_merchant_create(settings, name: str) -> int:
    async def create(db) -> dict:
        merchant, api_key = await db.transaction(merchants.create, name)
        return {"merchant": merchant, "api_key": api_key}

    print(json.dumps(with_database(settings, create), indent=2))
    return 0


def cmd_check(settings, skip: list[str] = ()) -> int:
    unknown = sorted(set(skip) - set(invariants.CHECKS) - set(invariants.WARNINGS))
    if unknown:
        print(f"paycast: no such check: {unknown[0]!r}", file=sys.stderr)
        return 2

    async def check(db) -> dict:
        return await db.run(invariants.violations, skip)

    found = with_database(settings, check)
    for name in (*invariants.CHECKS, *invariants.WARNINGS):
        if name in skip:
            print(f"skip  {name}")
            continue
        rows = found.get(name, [])
        failed = "FAIL" if name in invariants.CHECKS else "warn"
        print(f"{failed if rows else 'ok  '}  {name}" + (f" ({len(rows)} violations)" if rows else ""))
        for row in rows[:20]:
            print(f"        {json.dumps(row, default=str)}")
    return 1 if set(found) & set(invariants.CHECKS) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # its own options; no database needed here
        if "--chaos" in argv:
            return chaos.main(argv[1:])
        return simulate.main(argv[1:])
    parser = argparse.ArgumentParser(prog="run.py", description="Paycast payment backend")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the server (default)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="N processes on one port (SO_REUSEPORT), supervised; default PAYCAST_WORKERS (1)")
    # Roles combine with several processes per role: each is a full process on
    # the shared database. --workers N (SO_REUSEPORT)
    # starts N processes from this one's environment, hence PAYCAST_ROLE below.
    serve.add_argument("--role", choices=[r.value for r in Role],
                       help="what this process runs (default: PAYCAST_ROLE, else all); see config/roles.py")
    sub.add_parser("migrate", help="apply database migrations")
    merchant = sub.add_parser("merchant", help="merchant administration")
    merchant_sub = merchant.add_subparsers(dest="action", required=True)
    create = merchant_sub.add_parser("create", help="create a merchant and print its API key")
    create.add_argument("name")
    check = sub.add_parser("check", help="verify the invariants of docs/architecture.md against the database")
    check.add_argument("--skip", action="append", default=[], metavar="CHECK",
                       help="leave out the check of this name (repeatable), e.g. after rewriting rows by hand")
    sub.add_parser("simulate", help="drive demo traffic against a running server (see run.py simulate -h)")
    args = parser.parse_args(argv)
    # The flags outrank PAYCAST_WORKERS / PAYCAST_ROLE.
    overrides = {"workers": args.workers} if getattr(args, "workers", None) is not None else {}
    if getattr(args, "role", None):
        overrides["role"] = args.role
        # Exported too, so processes this one starts (``--workers N``) take the same role.
        os.environ["PAYCAST_ROLE"] = args.role
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"paycast: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    if args.command in (None, "serve"):
        return cmd_serve(settings)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "check":
        return cmd_check(settings, args.skip)
    if args.command == "merchant":
        return cmd_merchant_create(settings, args.name)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
