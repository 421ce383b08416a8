"""OpenTelemetry span trees of real flows, recorded with the SDK's in-memory exporter.

The server runs in this test's own process (the same components, app and hypercorn
server as ``run.py serve``, on a real port and the real PostgreSQL) so the
spans can be read from an ``InMemorySpanExporter``; requests go over real
HTTP, outgoing webhooks reach a real local endpoint.
"""

from __future__ import annotations

import contextlib
import json
import time
from types import SimpleNamespace

import httpx
import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry import tracing
from tests.realtime_support import connect, events, token, welcome
from tests.receiver import Receiver
from tests.support import ADMIN_TOKEN, UPI, expect, payment_body, sign_stripe

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@contextlib.asynccontextmanager
async def in_process_server(dsn: str, **settings):
    """``run.py serve`` inside this process: yields ``(base url, system)``."""
    import run
    from components import build_components
    from app.server import create_app, serve_http
    from config import load_settings

    config = load_settings(database_url=dsn, port=0, admin_token=ADMIN_TOKEN, webhook_allow_private_urls=True,
                           **settings)
    db = await run.open_database(config, dsn)
    try:
        async with trio.open_nursery() as nursery:
            system = build_components(config, db)
            await nursery.start(system.run)
            shutdown = trio.Event()
            app = create_app(system, ADMIN_TOKEN)
            binds = await nursery.start(lambda task_status: serve_http(
                app, "127.0.0.1", 0, shutdown, graceful_timeout=1, task_status=task_status))
            system.set_base_url(binds[0])
            try:
                yield binds[0], system
            finally:
                shutdown.set()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await db.close()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure("none", span_exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@contextlib.asynccontextmanager
async def _merchant_with_endpoint(url: str, receiver: Receiver):
    """A client of a new merchant whose webhook endpoint is ``receiver``."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        key = (await admin.post("/admin/merchants", json={"name": "traced"})).json()["api_key"]
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        r = await client.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]})
        expect(r, 201)
        yield client


async def _until(predicate, timeout: float = 15):
    with trio.fail_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.05)
    return value


def _tree(exporter: InMemorySpanExporter, trace_id: int) -> dict:
    """The finished spans of one trace: ``{span_id: span}``."""
    return {s.context.span_id: s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id}


def _children(tree: dict, parent) -> list:
    return sorted((s for s in tree.values() if s.parent is not None and s.parent.span_id == parent.context.span_id),
                  key=lambda s: s.start_time)


def _one(spans: list, name: str):
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _delivered(receiver: Receiver, event_type: str):
    for r in receiver.received:
        if json.loads(r.body)["type"] == event_type:
            return r
    return None


async def test_confirm_and_capture_continue_the_callers_traces_down_to_the_outgoing_webhooks(new_database, spans):
    second_trace = "1" * 32
    with Receiver() as receiver:
        async with in_process_server(new_database()) as (url, _system):
            async with _merchant_with_endpoint(url, receiver) as client:
                pay = (await client.post("/v1/payments", json=payment_body(700, capture_method="manual"))).json()
                r = await client.post(f"/v1/payments/{pay['id']}/confirm", headers={"traceparent": TRACEPARENT})
                expect(r, 200)
                assert r.json()["status"] == "requires_capture", r.text
                # The payment's actor is still alive (started by the confirm, in the confirm's
                # context); the capture must still be traced under the capture request.
                r = await client.post(f"/v1/payments/{pay['id']}/capture",
                                      headers={"traceparent": f"00-{second_trace}-{CALLER_SPAN}-01"})
                expect(r, 200)
                assert r.json()["status"] == "succeeded", r.text
                authorized = await _until(lambda: _delivered(receiver, "payment.requires_capture"))
                captured = await _until(lambda: _delivered(receiver, "payment.succeeded"))
                await _until(lambda: sum(s.name == "webhook send" for s in spans.get_finished_spans()) >= 3)

    tree = _tree(spans, int(CALLER_TRACE, 16))
    # The request span continues the caller's span, and is named by its route.
    request = _one(list(tree.values()), "POST /v1/payments/<payment_id>/confirm")
    assert request.parent.span_id == int(CALLER_SPAN, 16)
    assert request.parent.is_remote
    assert request.attributes["http.response.status_code"] == 200
    # Request → payment actor message (across the mailbox) → units of work and the connector call
    # (across the trio ↔ database-thread crossing and back), in order.
    actor = _one(_children(tree, request), "actor payment Confirm")
    steps = _children(tree, actor)
    assert [s.name for s in steps] == ["db payments.begin_attempt", "connector mockstripe authorize",
                                       "db payments.settle_begun"], [s.name for s in steps]
    assert steps[1].attributes["paycast.connector.outcome"] == "authorized"
    for s in steps:
        assert request.start_time <= s.start_time <= s.end_time <= request.end_time
    # The event written by settle carries settle's span; its outgoing webhook send is a child of it
    # and the request to the endpoint carries the send span's traceparent.
    send = _one(_children(tree, steps[2]), "webhook send")
    assert send.attributes["paycast.delivery.outcome"] == "succeeded"
    assert authorized.headers["traceparent"] == f"00-{CALLER_TRACE}-{send.context.span_id:016x}-01"
    assert [s.name for s in _children(tree, send)] == ["db webhook_deliveries.record_attempt"]

    second = _tree(spans, int(second_trace, 16))
    capture_request = _one(list(second.values()), "POST /v1/payments/<payment_id>/capture")
    capture = _one(_children(second, capture_request), "actor payment Capture")
    assert [s.name for s in _children(second, capture)] == [
        "db payments.load", "db payments.claim_operation", "connector mockstripe capture", "db payments.capture"]
    unit = _children(second, capture)[-1]
    send = _one(_children(second, unit), "webhook send")
    assert captured.headers["traceparent"] == f"00-{second_trace}-{send.context.span_id:016x}-01"


async def test_gateway_webhook_apply_and_delivery_join_the_receiving_requests_trace(new_database, spans):
    with Receiver() as receiver:
        async with in_process_server(new_database()) as (url, _system):
            async with _merchant_with_endpoint(url, receiver) as client, \
                    connect(SimpleNamespace(url=url), await token(client, "cus_traced")) as ws:
                await welcome(ws)
                # pending@upi: the simulator sends no webhook; we send the gateway's ourselves.
                pay = (await client.post("/v1/payments", json=payment_body(
                    900, method=UPI("pending@upi"), confirm=True, customer_id="cus_traced"))).json()
                assert pay["status"] == "processing", pay
                assert [f["event"]["type"] for f in await events(ws, 2)] == ["payment.created", "payment.processing"]
                body = json.dumps({
                    "id": f"evt_trace_{time.time_ns()}", "type": "payment_intent.succeeded",
                    "created": int(time.time()),
                    "data": {"object": {"id": pay["attempts"][-1]["connector_txn_id"], "amount": 900,
                                        "currency": "inr", "status": "succeeded",
                                        "metadata": {"payment_id": pay["id"]}}}}).encode()
                async with httpx.AsyncClient(base_url=url) as gateway:
                    r = await gateway.post("/webhooks/mockstripe", content=body,
                                           headers={**sign_stripe(body), "traceparent": TRACEPARENT})
                expect(r, 200)
                assert (await events(ws, 1))[0]["event"]["type"] == "payment.succeeded"
                sent = await _until(lambda: _delivered(receiver, "payment.succeeded"))
                await _until(lambda: any(s.name == "webhook send" and s.context.trace_id == int(CALLER_TRACE, 16)
                                         for s in spans.get_finished_spans()))

    tree = _tree(spans, int(CALLER_TRACE, 16))
    received = _one(list(tree.values()), "POST /webhooks/<connector>")
    assert received.parent.span_id == int(CALLER_SPAN, 16)
    # Stored in the inbox, applied later by the processor: the apply continues the request's trace.
    apply = _one(_children(tree, received), "inbox apply payment.succeeded")
    assert apply.start_time >= received.start_time
    assert apply.attributes["paycast.inbox.status"] == "applied"
    # Through the payment's actor when one is running (here: the confirm's, if still idling), else directly.
    via_actor = [s for s in _children(tree, apply) if s.name == "actor payment ApplyWebhook"]
    unit = _one(_children(tree, via_actor[0] if via_actor else apply), "db inbox.apply")
    # The event the apply wrote carries its trace: the outgoing delivery and the push to the
    # customer's WebSocket (through NOTIFY) join it.
    send = _one(_children(tree, unit), "webhook send")
    push = _one(_children(tree, unit), "realtime push")
    assert push.attributes["paycast.realtime.connections"] == 1
    assert sent.headers["traceparent"] == f"00-{CALLER_TRACE}-{send.context.span_id:016x}-01"


async def test_without_an_sdk_an_incoming_traceparent_still_reaches_the_outgoing_webhook(new_database):
    """``PAYCAST_OTEL_EXPORTER=none``: nothing is recorded, but the caller's trace passes through
    (OpenTelemetry's API semantics), via the event row, to the merchant's endpoint."""
    tracing.configure("none")
    assert not tracing.recording()
    with Receiver() as receiver:
        async with in_process_server(new_database()) as (url, _system):
            async with _merchant_with_endpoint(url, receiver) as client:
                r = await client.post("/v1/payments", json=payment_body(300, confirm=True),
                                      headers={"traceparent": TRACEPARENT})
                expect(r, 201)
                assert r.json()["status"] == "succeeded", r.text
                sent = await _until(lambda: _delivered(receiver, "payment.succeeded"))
    assert sent.headers["traceparent"] == TRACEPARENT


def test_otlp_exporter_sends_the_spans_to_the_configured_endpoint(new_database):
    """``PAYCAST_OTEL_EXPORTER=otlp`` in a real server process, configured only by the standard
    ``OTEL_EXPORTER_OTLP_*`` variables, posts OTLP/HTTP protobuf to a local receiver."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.support import ServerProcess, wait_for

    def spans_received() -> list:
        out = []
        for request in receiver.received:
            message = ExportTraceServiceRequest()
            message.ParseFromString(request.body)
            out += [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
        return out

    with Receiver() as receiver:
        server = ServerProcess(new_database("paycast_otlp"), PAYCAST_OTEL_EXPORTER="otlp",
                               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100").start()
        try:
            with server.client(server.create_merchant("otlp")) as c:
                r = c.post("/v1/payments", json=payment_body(confirm=True), headers={"traceparent": TRACEPARENT})
                expect(r, 201)
            spans = wait_for(lambda: [s for s in spans_received() if s.name == "POST /v1/payments"])
        finally:
            server.stop()
        assert receiver.received[0].headers["content-type"] == "application/x-protobuf"
    assert spans[0].trace_id.hex() == CALLER_TRACE
    assert spans[0].parent_span_id.hex() == CALLER_SPAN


def test_a_new_user_gets_a_traceparent_on_every_outgoing_webhook_without_any_tracing_set_up(new_database,
                                                                                          monkeypatch):
    """``PAYCAST_OTEL_EXPORTER`` unset and requests without a ``traceparent`` (a server process,
    as a new user runs it): every request the endpoint receives still carries a valid W3C
    ``traceparent``; the events one request wrote share its new trace, another request is
    another trace, and a retried delivery keeps its event's trace."""
    from tests.support import ServerProcess, wait_for

    monkeypatch.delenv("PAYCAST_OTEL_EXPORTER", raising=False)
    with Receiver(script=[500]) as receiver:
        server = ServerProcess(new_database("paycast_newtrace"), PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true",
                               PAYCAST_WEBHOOK_RETRY_SCHEDULE="0,1,1").start()
        try:
            with server.client(server.create_merchant("untraced")) as c:
                r = c.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]})
                expect(r, 201)
                first = c.post("/v1/payments", json=payment_body(300, confirm=True))
                expect(first, 201)
                assert first.json()["status"] == "succeeded", first.text
                second = c.post("/v1/payments", json=payment_body(400, capture_method="manual"))
                expect(second, 201)
                assert "traceparent" not in first.request.headers
                # The first request the endpoint saw was refused (500): it is sent again.
                wait_for(lambda: len({json.loads(x.body)["id"] for x in receiver.received}) >= 3
                         and len(receiver.received) >= 4)
        finally:
            server.stop()
    by_payment: dict[str, set[str]] = {}
    by_event: dict[str, set[str]] = {}
    for request in receiver.received:
        traceparent = request.headers.get("traceparent")
        assert traceparent is not None, request.headers
        version, trace_id, span_id, flags = traceparent.split("-")
        assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01"), traceparent
        assert int(trace_id, 16)
        assert int(span_id, 16)
        event = json.loads(request.body)
        by_payment.setdefault(event["data"]["object"]["id"], set()).add(trace_id)
        by_event.setdefault(event["id"], set()).add(traceparent)
    assert set(by_payment) == {first.json()["id"], second.json()["id"]}
    traces = [by_payment[first.json()["id"]], by_payment[second.json()["id"]]]
    assert [len(t) for t in traces] == [1, 1]
    assert traces[0] != traces[1]
    # The retried delivery (same event id, sent twice) carried the same traceparent both times.
    assert all(len(t) == 1 for t in by_event.values())
    assert max(len([x for x in receiver.received if json.loads(x.body)["id"] == e]) for e in by_event) == 2
