"""Session fixtures: one real PostgreSQL (embedded unless PAYCAST_TEST_DATABASE_URL)
and one real server process; each test makes its own merchant for isolation.

Session-wide setup is synchronous on purpose: pytest-trio's async fixtures are
function-scoped."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import pathlib

import asyncpg
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.support import ServerProcess, stop_all  # noqa: E402


def _create_database(admin_dsn: str, name: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(main())


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` (keeps query parameters such as host=)."""
    head, sep, query = dsn.partition("?")
    base = head.rsplit("/", 1)[0] if head.count("/") > 2 else head
    return f"{base}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def pg_admin_dsn():
    """A DSN to a PostgreSQL server we may create databases on."""
    url = os.environ.get("PAYCAST_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from pg.cluster import EmbeddedPostgres

    tmp = tempfile.mkdtemp(prefix="pcpg", dir="/tmp")
    pg = EmbeddedPostgres(pathlib.Path(tmp))
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def new_database(pg_admin_dsn):
    """Factory: a fresh, empty database on the test server; returns its DSN."""

    def make(prefix: str = "paycast_test") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        _create_database(pg_admin_dsn, name)
        return _with_database(pg_admin_dsn, name)

    return make


@pytest.fixture(scope="session")
def db_dsn(new_database):
    """The database shared by the session's server."""
    return new_database()


@pytest.fixture(scope="session")
def server(db_dsn):
    """One real Paycast server for the session."""
    # Tests register local receivers (http://127.0.0.1:…): the development switch.
    proc = ServerProcess(db_dsn, PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def start_server():
    """Factory: ``start_server(dsn, **env)`` starts a real server; every one is stopped at teardown.

    Tests that need their own processes (restarts, kill -9, two processes on one
    database) use this instead of ``ServerProcess(...).start()`` so a failing
    assertion or timeout never leaks a process. Stopping an already stopped or
    killed server is a no-op.
    """
    started: list[ServerProcess] = []

    def start(dsn: str, **env: str) -> ServerProcess:
        proc = ServerProcess(dsn, **env)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        stop_all(started, timeout=10)


@pytest.fixture
def api_key(server):
    return server.create_merchant()


@pytest.fixture
def client(server, api_key):
    with server.client(api_key) as c:
        yield c


@pytest.fixture(scope="session")
def localstripe():
    """One localstripe process (the Stripe stand-in, tests/stand_ins/localstripe.py) for the session."""
    from tests.stand_ins.localstripe import LocalStripe

    stand_in = LocalStripe().start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
