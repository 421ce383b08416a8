"""Process roles end to end: an ``api``, a ``realtime`` and a ``worker`` process on
one database (docs/api.md "Processes and transport").

The README walkthrough goes through the api port; a WebSocket client on the
realtime port receives the payments' events; UPI webhooks (sent by the api's
simulator to the api's /webhooks) are applied by the worker, woken by NOTIFY;
outgoing webhooks are sent by the worker; ``run.py check`` is clean after.
"""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionRejected

from tests.realtime_support import connect, frame, http, token, welcome
from tests.receiver import Receiver
from tests.support import ADMIN_TOKEN, CARD_OK, UPI, ServerProcess, expect, run_check

# Actors each role must run, and some it must not (the task tree's names).
EXPECTED = {
    "api": ({"actor:unit-writers", "actor:inbox-writer", "actor:webhook-simulator", "actor:wake-sender"},
            {"actor:inbox-processor", "actor:webhook-dispatcher", "actor:reconciler", "actor:pending-reconciler",
             "actor:realtime", "actor:partitions", "actor:wake-listener", "actor:rollups"}),
    "realtime": ({"actor:realtime", "actor:hub", "actor:realtime-listener"},
                 {"actor:unit-writers", "actor:inbox-writer", "actor:inbox-processor", "actor:webhook-dispatcher",
                  "actor:partitions", "actor:rollups"}),
    "worker": ({"actor:inbox-processor", "actor:webhook-dispatcher", "actor:reconciler", "actor:pending-reconciler",
                "actor:partitions",
                "actor:janitor", "actor:wake-listener", "actor:unit-writers", "actor:rollups"},
               {"actor:inbox-writer", "actor:realtime", "actor:wake-sender"}),
}


@pytest.fixture
def roles(new_database):
    """Three processes, one per role, on a fresh database."""
    dsn = new_database("paycast_roles")
    started: dict[str, ServerProcess] = {}
    local = {"PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}  # the test's receiver is on loopback
    try:
        started["api"] = ServerProcess(dsn, PAYCAST_ROLE="api", **local).start()
        started["realtime"] = ServerProcess(dsn, PAYCAST_ROLE="realtime", **local).start()
        # The worker's simulated connectors would send their webhooks to an api process.
        started["worker"] = ServerProcess(dsn, PAYCAST_ROLE="worker", PAYCAST_SIM_WEBHOOK_URL=started["api"].url,
                                          PAYCAST_RECONCILE_INTERVAL_S="0.2", **local).start()
        yield dsn, started
    finally:
        for proc in started.values():
            proc.stop()


def _names(node: dict) -> set[str]:
    out = {node["name"]}
    for child in node["children"]:
        out |= _names(child)
    return out


async def _metric(client, name: str) -> float:
    r = await client.get("/metrics")
    expect(r, 200)
    for line in r.text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def _wait_status(api, payment_id: str, status: str, timeout: float = 15) -> dict:
    with trio.fail_after(timeout):
        while True:
            pay = (await api.get(f"/v1/payments/{payment_id}")).json()
            if pay["status"] == status:
                return pay
            await trio.sleep(0.05)


async def test_api_realtime_worker_processes_share_the_work(roles):
    dsn, procs = roles
    api_proc, rt_proc, worker_proc = procs["api"], procs["realtime"], procs["worker"]

    # Each role runs its actors only, and serves health, readiness, metrics and the task tree.
    for role, proc in procs.items():
        async with http(proc, ADMIN_TOKEN) as admin:
            expect(await admin.get("/healthz"), 200)
            expect(await admin.get("/readyz"), 200)
            assert await _metric(admin, f'paycast_process_role{{role="{role}"}}') == 1
            tasks = _names((await admin.get("/debug/tasks?format=json")).json())
            present, absent = EXPECTED[role]
            assert present <= tasks, (role, present - tasks)
            assert not absent & tasks, (role, absent & tasks)
    # ... and its routes only.
    async with http(rt_proc, ADMIN_TOKEN) as rt_admin, http(worker_proc, ADMIN_TOKEN) as worker_admin:
        expect(await rt_admin.post("/admin/merchants", json={"name": "x"}), 404)
        expect(await worker_admin.post("/webhooks/mockstripe", content=b"{}"), 404)

    async with http(api_proc, ADMIN_TOKEN) as admin:
        r = await admin.post("/admin/merchants", json={"name": "Acme"})
        expect(r, 201)
        key = r.json()["api_key"]

    with Receiver() as receiver:
        async with http(api_proc, key) as api:
            r = await api.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]})
            expect(r, 201)
            tok = await token(api, "cus_42")
            with pytest.raises(ConnectionRejected):  # the api role does not serve the WebSocket
                async with connect(api_proc, tok):
                    pass
            async with connect(rt_proc, tok) as ws:
                await welcome(ws)

                # The README walkthrough, through the api port.
                order = (await api.post("/v1/orders", json={"amount": 2500, "currency": "INR",
                                                            "customer_id": "cus_42"})).json()
                r = await api.post("/v1/payments", headers={"Idempotency-Key": "demo-1"},
                                   json={"amount": 2500, "currency": "INR", "order_id": order["id"],
                                         "payment_method": CARD_OK})
                expect(r, 201)
                card = r.json()
                r = await api.post(f"/v1/payments/{card['id']}/confirm")
                expect(r, 200)
                assert r.json()["status"] == "succeeded", r.text
                assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "paid"
                types = [e["type"] for e in (await api.get("/v1/events?limit=5")).json()["data"]]
                assert types[:3] == ["order.paid", "payment.succeeded", "payment.created"], types

                # A UPI payment: its outcome comes as a gateway webhook, stored by the
                # api process and applied by the worker.
                r = await api.post("/v1/payments", json={"amount": 1500, "currency": "INR", "customer_id": "cus_42",
                                                         "payment_method": UPI("success@upi"), "confirm": True})
                assert r.status_code in (200, 201), r.text
                upi = r.json()
                assert upi["status"] == "processing", upi
                await _wait_status(api, upi["id"], "succeeded")

                # The WebSocket on the realtime port got both payments' outcomes.
                seen: dict[str, set[str]] = {card["id"]: set(), upi["id"]: set()}
                with trio.fail_after(15):
                    while "payment.succeeded" not in seen[card["id"]] or "payment.succeeded" not in seen[upi["id"]]:
                        f = await frame(ws)
                        if f["type"] == "event":
                            obj = f["event"]["data"]["object"]
                            if obj["id"] in seen:
                                seen[obj["id"]].add(f["event"]["type"])

                # A message published through the api reaches the socket held by the realtime process.
                r = await api.post("/v1/realtime/publish", json={"client_id": "cus_42",
                                                                 "event": {"type": "note", "data": {"n": 1}}})
                expect(r, 202)
                with trio.fail_after(15):
                    while True:
                        f = await frame(ws)
                        if f["type"] == "event" and f["event"].get("type") == "note":
                            assert f["seq"] == r.json()["seq"]
                            break

        # Outgoing webhooks are sent by the worker (the only process with a dispatcher).
        def delivered() -> set[tuple[str, str]]:
            bodies = [json.loads(r.body) for r in list(receiver.received)]
            return {(b["type"], b["data"]["object"]["id"]) for b in bodies}

        with trio.fail_after(15):
            while not {("payment.succeeded", card["id"]), ("payment.succeeded", upi["id"])} <= delivered():
                await trio.sleep(0.05)

    # The api woke the worker by NOTIFY rather than leaving it to its poll.
    async with http(api_proc, ADMIN_TOKEN) as a, http(worker_proc, ADMIN_TOKEN) as w:
        assert await _metric(a, 'paycast_wakeups{direction="sent"}') >= 1
        assert await _metric(w, 'paycast_wakeups{direction="received"}') >= 1

    for proc in procs.values():
        proc.stop()
    check = run_check(dsn)
    assert check.returncode == 0, check.stdout + check.stderr
