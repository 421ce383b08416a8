"""A Python SDK generated from the live ``/openapi.json`` by ``openapi-python-client``
(no hand edits) runs the README walkthrough against a real server: merchant, order,
payment, confirm, the order paid, a refund, the events — and a refused request comes
back as the documented error object."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

from tests.support import ADMIN_TOKEN, expect, skip_or_fail

PACKAGE = "paycast_sdk"


def _generate(server, tmp_path) -> None:
    """Generate the SDK into ``tmp_path/paycast_sdk`` and make it importable."""
    generator = shutil.which("openapi-python-client", path=os.path.dirname(sys.executable))
    if generator is None:
        skip_or_fail("openapi-python-client is not installed (the test extra)")
    spec = tmp_path / "openapi.json"
    spec.write_bytes(server.client().get("/openapi.json").content)
    config = tmp_path / "config.yml"
    # No post hooks: the generated code is used as generated (formatting it would need ruff).
    config.write_text(f"post_hooks: []\nproject_name_override: paycast-sdk\npackage_name_override: {PACKAGE}\n")
    done = subprocess.run([generator, "generate", "--path", str(spec), "--config", str(config), "--meta", "none",
                           "--output-path", str(tmp_path / PACKAGE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # The one endpoint it cannot generate is the CSV upload (text/csv bodies are unsupported).
    warnings = [line for line in done.stdout.splitlines() if line.startswith("WARNING")]
    assert all("/v1/reconciliation/reports" in line for line in warnings), done.stdout
    sys.path.insert(0, str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def test_a_generated_sdk_runs_the_readme_walkthrough(server, tmp_path):
    _generate(server, tmp_path)
    try:
        sdk = importlib.import_module(PACKAGE)
        api = importlib.import_module(f"{PACKAGE}.api.default")
        m = importlib.import_module(f"{PACKAGE}.models")
        for name in ("post_admin_merchants", "post_v1_orders", "post_v1_payments",
                     "post_v1_payments_payment_id_confirm", "get_v1_orders_order_id", "post_v1_refunds",
                     "get_v1_events", "get_v1_payments_payment_id"):
            importlib.import_module(f"{PACKAGE}.api.default.{name}")

        # 1. a merchant (admin token)
        admin = sdk.AuthenticatedClient(base_url=server.url, token=ADMIN_TOKEN, raise_on_unexpected_status=True)
        created = api.post_admin_merchants.sync(client=admin, body=m.CreateMerchant(name="Acme"))
        assert isinstance(created, m.MerchantCreated), created
        client = sdk.AuthenticatedClient(base_url=server.url, token=created.api_key, raise_on_unexpected_status=True)

        # 2. an order
        order = api.post_v1_orders.sync(client=client, body=m.CreateOrder(amount=2500, currency=m.Currency.INR,
                                                                          customer_id="cus_42"))
        assert isinstance(order, m.Order), order
        assert order.status.value == "created", order

        # 3. a card payment for it, then confirm it
        method = m.PaymentMethod(type_=m.PaymentMethodType.CARD, card=m.CardDetails(number="4242424242424242"))
        payment = api.post_v1_payments.sync(client=client, idempotency_key="demo-1", body=m.CreatePayment(
            amount=2500, currency=m.Currency.INR, order_id=order.id, payment_method=method))
        assert isinstance(payment, m.Payment), payment
        assert payment.status.value == "requires_confirmation", payment
        again = api.post_v1_payments.sync(client=client, idempotency_key="demo-1", body=m.CreatePayment(
            amount=2500, currency=m.Currency.INR, order_id=order.id, payment_method=method))
        assert again.id == payment.id  # the idempotency key replays the first answer
        confirmed = api.post_v1_payments_payment_id_confirm.sync(payment.id, client=client, body=m.Empty())
        assert isinstance(confirmed, m.Payment), confirmed
        assert confirmed.status.value == "succeeded", confirmed
        assert confirmed.amount_received == 2500
        assert confirmed.payment_method.card.last4 == "4242"

        # 4. the order is paid
        paid = api.get_v1_orders_order_id.sync(order.id, client=client)
        assert paid.status.value == "paid"
        assert paid.payment_ids == [payment.id]

        # 5. a refund
        refund = api.post_v1_refunds.sync(client=client, body=m.CreateRefund(payment_id=payment.id, amount=500))
        assert isinstance(refund, m.Refund), refund
        assert refund.amount == 500, refund
        assert refund.payment_id == payment.id, refund

        # 6. the events, newest first
        events = api.get_v1_events.sync(client=client, limit=10)
        assert isinstance(events, m.ListOfEvent), events
        types = [e.type_ for e in events.data]
        assert {"payment.created", "payment.succeeded", "order.paid"} <= set(types), types
        seqs = [e.seq for e in events.data]
        assert seqs == sorted(seqs, reverse=True)
        assert events.data[0].data.object_["id"] in (refund.id, payment.id, order.id)

        # A refusal is the documented error object, parsed.
        unknown = api.get_v1_payments_payment_id.sync_detailed("pay_missing", client=sdk.AuthenticatedClient(
            base_url=server.url, token=created.api_key))
        expect(unknown, 404)
        assert isinstance(unknown.parsed, m.Error), unknown
        assert unknown.parsed.error.type_ == "not_found"
        assert "pay_missing" in unknown.parsed.error.message
        refused = api.post_v1_payments.sync_detailed(client=sdk.AuthenticatedClient(
            base_url=server.url, token=created.api_key), body=m.CreatePayment(
            amount=0, currency=m.Currency.INR, payment_method=method))
        expect(refused, 400)
        assert refused.parsed.error.param == "amount", refused
    finally:
        sys.path.remove(str(tmp_path))
