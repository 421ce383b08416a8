"""Wallet accounts end to end: deposits credited exactly once by their payment,
withdrawals reserved at once and paid out or released by the payout webhook,
insufficient funds under concurrency (two processes), and the ledger's
invariants after a mixed random workload."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support import (CARD_DECLINED, CARD_OK, UPI, db_fetch, expect, run_check, sign_razorpay, sign_stripe,
                           stop_all, wait_for)


def _account(client, customer="cus_w1", currency="INR"):
    r = client.post("/v1/accounts", json={"customer_id": customer, "currency": currency})
    expect(r, 201)
    return r.json()


def _txn_status(client, txn_id, expected, timeout=15):
    def check():
        body = client.get(f"/v1/transactions/{txn_id}").json()
        return body if body["status"] == expected else None

    return wait_for(check, timeout=timeout)


def _deposit(client, account_id, amount, method=CARD_OK):
    r = client.post(f"/v1/accounts/{account_id}/deposits", json={"amount": amount, "payment_method": method})
    expect(r, 201)
    return r.json()


def _funded(client, amount, customer="cus_w1"):
    account = _account(client, customer)
    _txn_status(client, _deposit(client, account["id"], amount)["id"], "completed")
    return account


def test_create_account_and_validation(client):
    account = _account(client, "cus_new")
    assert account["object"] == "account"
    assert account["id"].startswith("acct_")
    assert account["balance"] == 0
    assert account["available_balance"] == 0
    assert account["customer_id"] == "cus_new"
    assert account["currency"] == "INR"
    assert client.get(f"/v1/accounts/{account['id']}").json() == account
    for body, param in [({"currency": "INR"}, "customer_id"), ({"customer_id": "c", "currency": "inr"}, "currency"),
                        ({"customer_id": "c", "currency": "INR", "balance": 5}, "balance")]:
        r = client.post("/v1/accounts", json=body)
        expect(r, 400)
        assert r.json()["error"]["param"] == param, r.text
    expect(client.get("/v1/accounts/acct_nope"), 404)
    listed = client.get("/v1/accounts", params={"customer_id": "cus_new"}).json()
    assert [a["id"] for a in listed["data"]] == [account["id"]]


def test_card_deposit_is_credited_when_its_payment_succeeds(client):
    account = _account(client, "cus_dep")
    txn = _deposit(client, account["id"], 5000)
    assert txn["object"] == "transaction"
    assert txn["id"].startswith("txn_")
    assert txn["type"] == "deposit"
    assert txn["status"] == "pending"
    assert txn["payment_id"].startswith("pay_")
    assert txn["amount"] == 5000
    assert txn["account_id"] == account["id"]
    assert txn["customer_id"] == "cus_dep"
    done = _txn_status(client, txn["id"], "completed")
    assert done["payment_id"] == txn["payment_id"]
    payment = client.get(f"/v1/payments/{txn['payment_id']}").json()
    assert payment["status"] == "succeeded"
    assert payment["customer_id"] == "cus_dep"
    assert payment["metadata"] == {"account_id": account["id"], "transaction_id": txn["id"]}
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 5000
    assert got["available_balance"] == 5000
    events = client.get("/v1/events", params={"object_id": txn["id"]}).json()["data"]
    assert [e["type"] for e in events] == ["account.deposit.completed"]
    assert events[0]["data"]["object"]["status"] == "completed"
    listed = client.get(f"/v1/accounts/{account['id']}/transactions").json()
    assert [t["id"] for t in listed["data"]] == [txn["id"]]
    # A deposit's payment cannot be refunded: the wallet holds that money.
    r = client.post("/v1/refunds", json={"payment_id": txn["payment_id"]})
    expect(r, 409)
    assert r.json()["error"]["code"] == "payment_unexpected_state"


def test_declined_deposit_fails_with_its_payment(client):
    account = _account(client, "cus_dep_fail")
    txn = _deposit(client, account["id"], 700, CARD_DECLINED)
    assert txn["status"] == "pending"
    failed = _txn_status(client, txn["id"], "failed")
    assert failed["failure_code"] == "card_declined"
    assert client.get(f"/v1/payments/{txn['payment_id']}").json()["status"] == "failed"
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 0
    assert got["available_balance"] == 0
    assert [e["type"] for e in client.get("/v1/events", params={"object_id": txn["id"]}).json()["data"]] == [
        "account.deposit.failed"]


def test_upi_deposits_complete_or_fail_by_webhook(client):
    account = _account(client, "cus_upi")
    ok = _deposit(client, account["id"], 1200, UPI("success@upi"))
    bad = _deposit(client, account["id"], 300, UPI("failure@upi"))
    _txn_status(client, ok["id"], "completed")
    _txn_status(client, bad["id"], "failed")
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 1200
    assert got["available_balance"] == 1200


def _success_webhook(payment, event_id):
    attempt = payment["attempts"][-1]
    txn = attempt["connector_txn_id"]
    if attempt["connector"] == "mockrazorpay":
        body = json.dumps({"event": "payment.captured", "created_at": int(time.time()), "x_event_id": event_id,
                           "payload": {"payment": {"entity": {"id": txn, "amount": payment["amount"],
                                                              "currency": "INR", "status": "captured",
                                                              "notes": {"payment_id": payment["id"]}}}}}).encode()
        return "mockrazorpay", body, sign_razorpay(body)
    body = json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": txn, "amount": payment["amount"], "currency": "inr",
                                           "status": "succeeded", "metadata": {"payment_id": payment["id"]}}}}).encode()
    return attempt["connector"], body, sign_stripe(body)


def test_deposit_credited_once_when_its_success_webhook_arrives_5_times(server, client, db_dsn):
    account = _account(client, "cus_5x")
    txn = _deposit(client, account["id"], 4321, UPI("pending@upi"))
    payment = wait_for(lambda: (p := client.get(f"/v1/payments/{txn['payment_id']}").json())["attempts"]
                       and p["attempts"][-1]["connector_txn_id"] and p)
    # The same event five times (the inbox de-duplicates) and five distinct events
    # saying the same thing (the payment and the ledger de-duplicate), all at once.
    same = [_success_webhook(payment, f"evt_5x_same_{txn['id']}") for _ in range(5)]
    distinct = [_success_webhook(payment, f"evt_5x_{i}_{txn['id']}") for i in range(5)]

    def send(item):
        connector, body, headers = item
        with server.client() as anon:
            return anon.post(f"/webhooks/{connector}", content=body, headers=headers).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(send, same + distinct)) == {200}
    _txn_status(client, txn["id"], "completed")
    wait_for(lambda: db_fetch(db_dsn, "SELECT count(*) AS n FROM webhook_inbox WHERE payment_id = $1"
                                      " AND processed_at IS NULL", txn["payment_id"])[0]["n"] == 0)
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 4321
    assert got["available_balance"] == 4321
    entries = db_fetch(db_dsn, "SELECT movement, book, amount FROM ledger_entries WHERE transaction_id = $1"
                               " ORDER BY amount", txn["id"])
    assert entries == [{"movement": "deposit", "book": "external", "amount": -4321},
                       {"movement": "deposit", "book": "available", "amount": 4321}]
    events = client.get("/v1/events", params={"object_id": txn["id"]}).json()["data"]
    assert [e["type"] for e in events] == ["account.deposit.completed"]
    statuses = db_fetch(db_dsn, "SELECT status, count(*) AS n FROM webhook_inbox WHERE payment_id = $1"
                                " GROUP BY status ORDER BY status", txn["payment_id"])
    # Six distinct event ids (the repeated one is stored once): one applied, five ignored.
    assert statuses == [{"status": "applied", "n": 1}, {"status": "ignored", "n": 5}]


def test_withdrawal_reserves_at_once_then_pays_out(client):
    account = _funded(client, 10_000, "cus_wd")
    r = client.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 2500})
    expect(r, 201)
    txn = r.json()
    assert txn["type"] == "withdrawal"
    assert txn["status"] == "pending"
    assert txn["payment_id"] is None
    got = client.get(f"/v1/accounts/{account['id']}").json()
    # Reserved at once: available drops now; the balance drops when the payout is paid.
    assert got["available_balance"] == 7500
    assert got["balance"] in (10_000, 7500)
    done = _txn_status(client, txn["id"], "completed")
    assert done["connector"] in ("mockstripe", "mockrazorpay")
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 7500
    assert got["available_balance"] == 7500
    events = client.get("/v1/events", params={"object_id": txn["id"]}).json()["data"]
    assert [e["type"] for e in events] == ["account.withdrawal.completed"]


def test_failed_payout_releases_the_reservation(client, db_dsn):
    account = _funded(client, 5000, "cus_wd_fail")
    txn = client.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 1099}).json()
    failed = _txn_status(client, txn["id"], "failed")
    assert failed["failure_code"] == "payout_failed"
    got = client.get(f"/v1/accounts/{account['id']}").json()
    assert got["balance"] == 5000
    assert got["available_balance"] == 5000
    movements = db_fetch(db_dsn, "SELECT movement, book, amount FROM ledger_entries WHERE transaction_id = $1"
                                 " ORDER BY id", txn["id"])
    assert [(m["movement"], m["book"], m["amount"]) for m in movements] == [
        ("reserve", "available", -1099), ("reserve", "reserved", 1099),
        ("release", "reserved", -1099), ("release", "available", 1099)]
    assert [e["type"] for e in client.get("/v1/events", params={"object_id": txn["id"]}).json()["data"]] == [
        "account.withdrawal.failed"]


def test_withdrawal_past_available_balance_is_409(client):
    account = _funded(client, 1000, "cus_poor")
    r = client.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 1001})
    expect(r, 409)
    assert r.json()["error"]["type"] == "state_error"
    assert r.json()["error"]["code"] == "insufficient_funds"
    empty = _account(client, "cus_empty")
    expect(client.post(f"/v1/accounts/{empty['id']}/withdrawals", json={"amount": 1}), 409)
    for body, param in [({"amount": 0}, "amount"), ({}, "amount"), ({"amount": 5, "to": "x"}, "to")]:
        r = client.post(f"/v1/accounts/{account['id']}/withdrawals", json=body)
        expect(r, 400)
        assert r.json()["error"]["param"] == param
    expect(client.post("/v1/accounts/acct_nope/withdrawals", json={"amount": 5}), 404)
    expect(client.post("/v1/accounts/acct_nope/deposits",
                       json={"amount": 5, "payment_method": CARD_OK}), 404)
    bad_card = client.post(f"/v1/accounts/{account['id']}/deposits",
                           json={"amount": 5, "payment_method": {"type": "card", "card": {"number": "123"}}})
    expect(bad_card, 400)
    assert bad_card.json()["error"]["param"] == "payment_method.card.number"


def test_concurrent_withdrawals_across_two_processes_never_overdraw(new_database, start_server):
    """A wallet of 10,000 and 16 concurrent withdrawals of 1,500 over two processes: exactly six are accepted."""
    dsn = new_database("paycast_wallet_race")
    # Payout webhooks come late, so the reservations are seen before they are paid out.
    slow = {"PAYCAST_SIM_DELAY_MS": "2000"}
    a, b = start_server(dsn, **slow), start_server(dsn, **slow)
    try:
        api_key = a.create_merchant()
        with a.client(api_key) as c:
            account = _funded(c, 10_000, "cus_race")

        def withdraw(i):
            with (a if i % 2 else b).client(api_key) as c:
                return c.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 1500})

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(withdraw, range(16)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] * 6 + [409] * 10, [r.text for r in responses]
        assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"insufficient_funds"}
        with b.client(api_key) as c:
            reserved = c.get(f"/v1/accounts/{account['id']}").json()
            assert reserved["available_balance"] == 1000
            assert reserved["balance"] == 10_000
            wait_for(lambda: all(c.get(f"/v1/transactions/{r.json()['id']}").json()["status"] == "completed"
                                 for r in responses if r.status_code == 201))
            got = c.get(f"/v1/accounts/{account['id']}").json()
            assert got["balance"] == 1000
            assert got["available_balance"] == 1000
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        stop_all([a, b])


def test_ledger_invariants_after_a_mixed_random_workload(new_database, start_server):
    """Deposits (cards, UPI, declines), withdrawals (paid, failed, refused) on a few
    wallets in random order and concurrently; afterwards every balance is the sum of
    its entries and of its completed transactions, and `run.py check` passes."""
    dsn = new_database("paycast_ledger_mix")
    server = start_server(dsn, PAYCAST_SIM_DUPLICATE_RATE="0.2", PAYCAST_SIM_REORDER="true")
    try:
        api_key = server.create_merchant()
        rng = random.Random(5)
        with server.client(api_key) as c:
            wallets = [_account(c, f"cus_mix_{i}")["id"] for i in range(4)]
        methods = [CARD_OK, CARD_OK, UPI("success@upi"), UPI("failure@upi"), CARD_DECLINED]
        jobs = []
        for i in range(120):
            wallet = rng.choice(wallets)
            if rng.random() < 0.55:
                jobs.append(("deposit", wallet, rng.randint(1, 40) * 100, rng.choice(methods)))
            else:  # amounts ending in 99 fail at the connector
                jobs.append(("withdraw", wallet, rng.randint(1, 15) * 100 + rng.choice([0, 0, 99]), None))

        def run(job):
            kind, wallet, amount, method = job
            with server.client(api_key) as c:
                if kind == "deposit":
                    r = c.post(f"/v1/accounts/{wallet}/deposits", json={"amount": amount, "payment_method": method})
                else:
                    r = c.post(f"/v1/accounts/{wallet}/withdrawals", json={"amount": amount})
                assert r.status_code in (201, 409), r.text
                return r.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(run, jobs))
        assert codes.count(201) > 60

        def settled():
            return db_fetch(dsn, "SELECT count(*) AS n FROM account_transactions WHERE status = 'pending'")[0]["n"] == 0

        wait_for(settled, timeout=60, interval=0.5)
        with server.client(api_key) as c:
            for wallet in wallets:
                got = c.get(f"/v1/accounts/{wallet}").json()
                sums = db_fetch(dsn, "SELECT COALESCE(sum(amount), 0) AS total,"
                                     " COALESCE(sum(amount) FILTER (WHERE book = 'available'), 0) AS available"
                                     " FROM ledger_entries WHERE account_id = $1", wallet)[0]
                txns = db_fetch(dsn, "SELECT COALESCE(sum(CASE WHEN type = 'deposit' THEN amount ELSE -amount END),"
                                     " 0) AS net FROM account_transactions WHERE account_id = $1"
                                     " AND status = 'completed'", wallet)[0]
                assert got["balance"] == sums["total"] == txns["net"] == got["available_balance"] == sums["available"]
                assert got["balance"] >= 0
        unbalanced = db_fetch(dsn, "SELECT transaction_id, movement FROM ledger_entries"
                                   " GROUP BY transaction_id, movement HAVING sum(amount) <> 0 OR count(*) <> 2")
        assert unbalanced == []
        kinds = {(r["type"], r["status"]) for r in db_fetch(dsn, "SELECT type, status FROM account_transactions")}
        assert {("deposit", "completed"), ("deposit", "failed"), ("withdrawal", "completed"),
                ("withdrawal", "failed")} <= kinds
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        server.stop()


def test_account_and_dispatcher_actors_show_in_the_task_tree(server, client):
    account = _account(client, "cus_tasks")
    _deposit(client, account["id"], 100)
    with server.client("adm_test_token") as admin:
        tree = admin.get("/debug/tasks").text
    assert f"actor:account:{account['id']}" in tree
    assert "actor:webhook-dispatcher" in tree
