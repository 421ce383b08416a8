"""Integration tests for pg.cluster: a real PostgreSQL server per test.

Data dirs live directly under /tmp so that the socket path stays short
(except in the test that deliberately exercises the long-path fallback).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

import asyncpg
import psutil

from pg.cluster import EmbeddedPostgres

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fetchval(dsn: str, sql: str, *args):
    async def go():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def _execute(dsn: str, sql: str) -> None:
    async def go():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])


def _mkdtemp() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(dir="/tmp", prefix="epg-test-"))


def test_start_query_restart_keeps_data() -> None:
    data_dir = _mkdtemp()
    pg = EmbeddedPostgres(data_dir / "db", port=5432)
    try:
        dsn = pg.start()
        assert pg.is_running()
        assert dsn == f"postgresql://postgres@/postgres?host={pg.pgdata}&port=5432"
        assert _fetchval(dsn, "SELECT 1") == 1
        assert _fetchval(dsn, "SHOW max_connections") == "200"
        assert _fetchval(dsn, "SHOW fsync") == "on"
        assert _fetchval(dsn, "SHOW synchronous_commit") == "on"
        assert _fetchval(dsn, "SHOW listen_addresses") == ""
        _execute(dsn, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives restart')")

        pg.ensure_database("app")
        pg.ensure_database("app")  # idempotent
        assert _fetchval(pg.dsn("app"), "SELECT current_database()") == "app"

        pg.stop()
        assert not pg.is_running()

        # Second start reuses the initialised cluster (no initdb) and its data.
        assert pg.start() == dsn
        assert _fetchval(dsn, "SELECT v FROM kept") == "survives restart"
        assert _fetchval(pg.dsn("app"), "SELECT 1") == 1
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_start_twice_reuses_server_and_stop_is_idempotent() -> None:
    data_dir = _mkdtemp()
    # Deep enough that pgdata/.s.PGSQL.5432 exceeds 100 chars: the socket
    # must move to a short directory under /tmp.
    deep = data_dir / ("d" * 60) / ("e" * 40)
    pg = EmbeddedPostgres(deep)
    other = EmbeddedPostgres(deep)
    try:
        pg.stop()  # never initialised: must be a no-op
        dsn = pg.start()
        assert "host=/tmp/epg-" in dsn
        pid = _postmaster_pid(pg)

        assert pg.start() == dsn
        assert other.start() == dsn  # a second handle adopts the same server
        assert _postmaster_pid(pg) == pid
        assert _fetchval(dsn, "SELECT 1") == 1

        socket_dir = pathlib.Path(dsn.split("host=")[1].split("&")[0])
        assert (socket_dir / ".s.PGSQL.5432").is_socket()

        pg.stop()
        assert not pg.is_running()
        assert not other.is_running()
        assert not socket_dir.exists()  # stop() tidies the /tmp fallback dir
        pg.stop()
        other.stop()
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_recovers_from_killed_postmaster_and_concurrent_starts() -> None:
    data_dir = _mkdtemp()
    pg = EmbeddedPostgres(data_dir)
    try:
        # Two processes racing to initialise and start the same data dir must
        # end up sharing one server.
        code = (
            "import sys; from pg.cluster import EmbeddedPostgres; "
            "print(EmbeddedPostgres(sys.argv[1]).start())"
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(data_dir)],
                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert outs[0][0] == outs[1][0]
        dsn = pg.start()
        assert outs[0][0].strip() == dsn
        _execute(dsn, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)")

        # kill -9 leaves a stale postmaster.pid behind; start() must recover.
        pid = _postmaster_pid(pg)
        os.kill(pid, signal.SIGKILL)
        try:
            psutil.Process(pid).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        assert not pg.is_running()
        assert (pg.pgdata / "postmaster.pid").exists()

        assert pg.start() == dsn
        assert _postmaster_pid(pg) != pid
        assert _fetchval(dsn, "SELECT v FROM t") == 42  # committed data survived the crash
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_leases_last_one_out_stops_and_dead_holders_do_not_count() -> None:
    data_dir = _mkdtemp()
    first, second = EmbeddedPostgres(data_dir), EmbeddedPostgres(data_dir)
    try:
        lease_a = first.acquire()
        lease_b = second.acquire()
        pid = _postmaster_pid(first)
        assert first.live_users() == 2
        assert lease_a.release() is False  # the other user still needs it
        assert first.is_running()
        assert _postmaster_pid(first) == pid
        # A user that dies without releasing (kill -9) does not keep it alive.
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time; sys.path.insert(0, sys.argv[2]);"
             "from pg.cluster import EmbeddedPostgres;"
             "EmbeddedPostgres(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
             str(data_dir), str(REPO_ROOT)],
            stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "held"
        assert first.live_users() == 2
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert first.live_users() == 1  # and its stale lease file is gone
        assert len(list((data_dir / "pg.users").glob("*.lease"))) == 1
        assert lease_b.release() is True  # the last one out stops it
        assert not first.is_running()
        assert lease_b.release() is False  # idempotent
    finally:
        first.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
