"""Every event a client cares about reaches its stream: payments, orders,
wallet transactions, and the refunds and disputes of its payments — in seq
order, resumable with ``after_seq``, and never another client's."""

from __future__ import annotations

import trio

from tests.realtime_support import connect, frame, http, publish, token, welcome
from tests.support import CARD_OK

CARD_DISPUTED = {"type": "card", "card": {"number": "4000000000000259"}}
WANTED = {"payment.succeeded", "refund.succeeded", "dispute.opened", "account.deposit.completed"}


async def _until_types(ws, wanted: set[str], timeout: float = 30) -> list[dict]:
    """Event frames until every type in ``wanted`` was seen."""
    got: list[dict] = []
    with trio.fail_after(timeout):
        while not wanted <= {f["event"]["type"] for f in got}:
            f = await frame(ws, timeout)
            assert f["type"] == "event", f
            got.append(f)
    return got


async def _poll_status(api, path: str, status: str) -> dict:
    with trio.fail_after(20):
        while True:
            body = (await api.get(path)).json()
            if body.get("status") == status:
                return body
            await trio.sleep(0.05)


async def test_refund_dispute_and_wallet_events_reach_their_client_only_and_resume_without_gap(server, api_key):
    async with http(server, api_key) as api:
        tok_a, tok_b = await token(api, "cus_kinds_a"), await token(api, "cus_kinds_b")
        async with connect(server, tok_a) as alice, connect(server, tok_b) as bob:
            await welcome(alice)
            await welcome(bob)
            paid = (await api.post("/v1/payments", json={"amount": 900, "currency": "INR", "customer_id": "cus_kinds_a",
                                                         "payment_method": CARD_OK, "confirm": True})).json()
            assert paid["status"] == "succeeded", paid
            refund = (await api.post("/v1/refunds", json={"payment_id": paid["id"], "amount": 400})).json()
            await _poll_status(api, f"/v1/refunds/{refund['id']}", "succeeded")
            disputed = (await api.post("/v1/payments", json={"amount": 700, "currency": "INR",
                                                             "customer_id": "cus_kinds_a",
                                                             "payment_method": CARD_DISPUTED,
                                                             "confirm": True})).json()
            assert disputed["status"] == "succeeded", disputed
            account = (await api.post("/v1/accounts", json={"customer_id": "cus_kinds_a", "currency": "INR"})).json()
            deposit = (await api.post(f"/v1/accounts/{account['id']}/deposits",
                                      json={"amount": 500, "payment_method": CARD_OK})).json()
            await _poll_status(api, f"/v1/transactions/{deposit['id']}", "completed")

            live = await _until_types(alice, WANTED)
            assert [f["seq"] for f in live] == list(range(1, len(live) + 1))
            by_type = {f["event"]["type"]: f for f in live}
            assert by_type["refund.succeeded"]["topic"] == f"refund:{refund['id']}"
            assert by_type["refund.succeeded"]["event"]["data"]["object"]["payment_id"] == paid["id"]
            assert by_type["dispute.opened"]["topic"].startswith("dispute:dp_")
            assert by_type["dispute.opened"]["event"]["data"]["object"]["payment_id"] == disputed["id"]
            assert by_type["account.deposit.completed"]["topic"] == f"account:{deposit['id']}"

            # Bob got none of it: the first frame he sees is his own published seq 1.
            assert (await publish(api, "cus_kinds_b", "only-bob"))["seq"] == 1
            first = await frame(bob)
            assert first["type"] == "event"
            assert first["seq"] == 1
            assert first["event"]["data"] == "only-bob"

        # Let anything still in flight for alice commit, then resume from several points.
        everything = live + await _drain_rest(server, tok_a, live[-1]["seq"])
        seqs = [f["seq"] for f in everything]
        assert seqs == list(range(1, len(seqs) + 1))
        for after in (0, 1, len(everything) // 2, len(everything) - 1):
            async with connect(server, tok_a, after_seq=after) as again:
                await welcome(again)
                replay = [await frame(again) for _ in range(len(everything) - after)]
                assert [f["seq"] for f in replay] == seqs[after:]
                assert [f["event"] for f in replay] == [f["event"] for f in everything[after:]]
                # Nothing more (no duplicate): the next frame is a fresh publish.
                marker = await publish(api, "cus_kinds_a", f"after-{after}")
                nxt = await frame(again)
                assert nxt["seq"] == marker["seq"]
                assert nxt["event"]["data"] == f"after-{after}"
                everything.append(nxt)
                seqs.append(nxt["seq"])


async def _drain_rest(server, tok: str, after: int) -> list[dict]:
    """Frames after ``after`` that are already stored (e.g. events of the disputed
    payment still being written when the live stream was left)."""
    out: list[dict] = []
    async with connect(server, tok, after_seq=after) as ws:
        await welcome(ws)
        while True:
            with trio.move_on_after(1.0):
                out.append(await frame(ws))
                continue
            return out


async def test_a_message_whose_notification_never_came_is_still_delivered(server, db_dsn, api_key):
    """Notifications are sent after commit (not inside the transaction), so a
    process can die between the two; a message committed with no notification
    at all must still reach the connected client (the hub re-checks its clients)."""
    from tests.support import db_fetch

    async with http(server, api_key) as api:
        async with connect(server, await token(api, "cus_silent")) as ws:
            await welcome(ws)
            await publish(api, "cus_silent", "loud")
            assert (await frame(ws))["seq"] == 1
            (row,) = await trio.to_thread.run_sync(
                db_fetch, db_dsn,
                "WITH c AS (UPDATE realtime_clients SET last_seq = last_seq + 1 WHERE client_id = 'cus_silent'"
                " RETURNING merchant_id, client_id, last_seq)"
                " INSERT INTO realtime_messages (merchant_id, client_id, seq, topic, device_id, payload)"
                " SELECT merchant_id, client_id, last_seq, 'client:cus_silent', NULL,"
                " '{\"type\": \"test.message\", \"data\": \"silent\"}'::jsonb FROM c RETURNING seq")
            assert row["seq"] == 2
            got = await frame(ws, timeout=25)  # found by the hub's periodic check (two 5 s periods at most)
            assert got["seq"] == 2
            assert got["event"]["data"] == "silent"
