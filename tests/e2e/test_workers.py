"""``run.py serve --workers 2``: two full processes on one port, supervised by their parent.

Every request below opens a fresh connection, so the kernel's SO_REUSEPORT
balancing spreads them over the workers.
"""

from __future__ import annotations

import signal
import time

import httpx
import psutil
import pytest

from tests.support import ServerProcess, expect, payment_body, run_check, wait_for


def _pid(url: str) -> int:
    r = httpx.get(url + "/healthz", timeout=10)  # a new connection each call
    expect(r, 200)
    return int(r.headers["Paycast-Pid"])


def _workers(server: ServerProcess) -> set[int]:
    return {c.pid for c in psutil.Process(server.proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE}


def _pids_seen(url: str, want: set[int], timeout: float = 30) -> set[int]:
    """The pids that answered /healthz until all of ``want`` did (or ``timeout`` passed)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        seen.add(_pid(url))
    return seen


@pytest.fixture
def workers2(new_database):
    server = ServerProcess(new_database("paycast_workers"), PAYCAST_WORKERS="2").start(timeout=90)
    yield server
    server.stop(timeout=30)


def test_both_workers_serve_one_port_and_the_flow_works_across_them(workers2):
    server = workers2
    pids = _workers(server)
    assert len(pids) == 2
    assert server.proc.pid not in pids
    assert _pids_seen(server.url, pids) == pids  # both answer on the one port

    api_key = server.create_merchant("workers merchant")
    auth = {"Authorization": f"Bearer {api_key}"}
    for i in range(12):
        created = httpx.post(server.url + "/v1/payments", json=payment_body(), headers=auth, timeout=30)
        expect(created, 201)
        pay_id = created.json()["id"]
        key = {**auth, "Idempotency-Key": f"confirm-{i}"}
        confirmed = httpx.post(f"{server.url}/v1/payments/{pay_id}/confirm", headers=key, timeout=30)
        expect(confirmed, 200)
        assert confirmed.json()["status"] == "succeeded", confirmed.text
        # The replay may land on the other worker: the stored response comes from the database.
        replay = httpx.post(f"{server.url}/v1/payments/{pay_id}/confirm", headers=key, timeout=30)
        expect(replay, 200)
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.content == confirmed.content

    events = httpx.get(server.url + "/v1/events?limit=100", headers=auth, timeout=30).json()["data"]
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free although two processes wrote them
    assert sorted(e["type"] for e in events).count("payment.succeeded") == 12
    assert run_check(server.dsn).returncode == 0


def test_parent_restarts_a_killed_worker_and_stops_all_on_sigterm(workers2):
    server = workers2
    before = _workers(server)
    victim = min(before)
    psutil.Process(victim).send_signal(signal.SIGKILL)
    after = wait_for(lambda: (lambda now: now if len(now) == 2 and victim not in now else None)(_workers(server)),
                     timeout=60)
    assert _pids_seen(server.url, after) == after  # the new worker serves too

    assert server.stop(timeout=30) == 0
    for pid in after:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_workers_do_not_outlive_a_killed_parent(workers2):
    server = workers2
    pids = _workers(server)
    server.kill9()  # no chance to stop anything: the kernel tells the workers (PR_SET_PDEATHSIG)

    def gone() -> bool:
        return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)

    wait_for(gone, timeout=30)
