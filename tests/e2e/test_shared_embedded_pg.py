"""The embedded PostgreSQL is shared by every process of one PAYCAST_DATA_DIR
(the last one out stops it) and supervised by the server (a killed postmaster
is started again; acknowledged writes survive)."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from pg.cluster import EmbeddedPostgres
from tests.support import ROOT, ServerProcess, expect, payment_body, wait_for


@pytest.fixture
def data_dir():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pcshr", dir="/tmp"))
    try:
        yield tmp
    finally:
        EmbeddedPostgres(tmp).stop()  # whatever a failed test left behind
        shutil.rmtree(tmp, ignore_errors=True)


def _embedded_server(data_dir: pathlib.Path) -> ServerProcess:
    # An empty PAYCAST_DATABASE_URL means "unset": the embedded server is used.
    return ServerProcess("", PAYCAST_DATA_DIR=str(data_dir), PAYCAST_DB_CONNECT_TIMEOUT_S="1").start(timeout=90)


def _one_shot(data_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PAYCAST_DATABASE_URL"}
    env.update(PAYCAST_DATA_DIR=str(data_dir), PAYCAST_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _postmaster_pid(data_dir: pathlib.Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])


def test_one_shot_commands_beside_a_live_server_leave_it_serving(data_dir):
    server = _embedded_server(data_dir)
    try:
        api_key = server.create_merchant()
        pid = _postmaster_pid(data_dir)
        with server.client(api_key) as c:
            for command in (["check"], ["migrate"], ["merchant", "create", "on-call"]):
                done = _one_shot(data_dir, *command)
                assert done.returncode == 0, done.stderr
                # Served at once (not after a restart): the same postmaster still runs.
                assert EmbeddedPostgres(data_dir).is_running(), command
                assert _postmaster_pid(data_dir) == pid, command
                expect(c.get("/readyz"), 200, note=command)
                expect(c.post("/v1/payments", json=payment_body(confirm=True)), 201, note=command)
    finally:
        assert server.stop() == 0
    # The server was the last user: it stopped PostgreSQL on its way out.
    assert not EmbeddedPostgres(data_dir).is_running()


def test_a_killed_user_does_not_keep_the_server_alive(data_dir):
    server = _embedded_server(data_dir)
    server.kill9()  # its lease dies with it; the postmaster stays up
    assert EmbeddedPostgres(data_dir).is_running()
    done = _one_shot(data_dir, "check")
    assert done.returncode == 0, done.stderr
    # check adopted the orphaned server and, being the last live user, stopped it.
    assert not EmbeddedPostgres(data_dir).is_running()
    assert list((data_dir / "pg.users").glob("*.lease")) == []


def test_postmaster_killed_under_load_is_restarted_without_losing_writes(data_dir):
    server = _embedded_server(data_dir)
    acknowledged: list[str] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()
    try:
        api_key = server.create_merchant()

        def load() -> None:
            with server.client(api_key, timeout=20) as c:
                while not stop.is_set():
                    r = c.post("/v1/payments", json=payment_body(confirm=True))
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])
                    else:
                        expect(r, 503)
                        assert r.json()["error"]["code"] == "unavailable"

        workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for w in workers:
            w.start()
        wait_for(lambda: len(acknowledged) >= 20, timeout=30)
        old_pid = _postmaster_pid(data_dir)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = len(acknowledged)
        # Nobody restarts it but the server's supervisor.
        wait_for(lambda: len(acknowledged) >= killed_at + 20, timeout=60, interval=0.2)
        stop.set()
        for w in workers:
            w.join(30)
        assert _postmaster_pid(data_dir) != old_pid
        with server.client(api_key) as c:
            expect(c.get("/readyz"), 200)
            for payment_id in acknowledged:
                r = c.get(f"/v1/payments/{payment_id}")
                expect(r, 200, note=payment_id)
                assert r.json()["status"] == "succeeded", (payment_id, r.text)
    finally:
        stop.set()
        server.stop()
    done = _one_shot(data_dir, "check")
    assert done.returncode == 0, done.stdout + done.stderr
