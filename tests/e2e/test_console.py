"""The operator console: its read endpoints over real HTTP against a
real server, and its pages in a real headless Chromium (Debian's, through
Playwright, as tests/e2e/test_dashboard.py).

One server for the module, with settings that make the interesting states
happen quickly: a 1 s processing deadline with reconciliation far away (so
``pending@upi`` payments and flaky timeouts stay overdue), a flaky connector
that errors often (so routed payments fall back), and a webhook endpoint
that refuses connections (so deliveries fail).
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import socket
import time

import httpx
import pytest
import trio

from tests.e2e.test_dashboard import browser  # noqa: F401 - the module-scoped Chromium fixture
from tests.realtime_support import connect, http, token, welcome
from tests.support import (ADMIN_TOKEN, CARD_DECLINED, UPI, ServerProcess, db_fetch, expect, payment_body, sign_stripe,
                           wait_for)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
AXE = ROOT / "app" / "static" / "vendor" / "axe-core" / "axe.min.js"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


@pytest.fixture(scope="module")
def console_server(new_database):
    proc = ServerProcess(new_database("paycast_console"), PAYCAST_PROCESSING_DEADLINE_S="1",
                         PAYCAST_RECONCILE_INTERVAL_S="3600", PAYCAST_FLAKY_ERROR_RATE="0.6",
                         PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true", PAYCAST_WEBHOOK_RETRY_SCHEDULE="0,3600",
                         PAYCAST_INBOX_RETRY_SCHEDULE="0,1",
                         # flaky fails 60 % of calls: its breaker would open after 10 of them (and stay
                         # open past the fixture's tries) whenever none of the first ones fell back.
                         PAYCAST_BREAKER_MIN_CALLS="1000").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def mix(console_server):
    """A scripted mix of payments; returns what the tests need to know about it."""
    key = console_server.create_merchant("console")
    with console_server.client(key) as c:
        hook = c.post("/v1/webhook_endpoints", json={"url": f"http://127.0.0.1:{_closed_port()}/hook",
                                                     "enabled_events": ["*"]})
        expect(hook, 201)
        order = c.post("/v1/orders", json={"amount": 4200, "currency": "INR", "customer_id": "cus_console"}).json()
        ok = [c.post("/v1/payments", json=payment_body(1000 + i, confirm=True, connector="mockstripe",
                                                      customer_id="cus_console")).json() for i in range(3)]
        ordered = c.post("/v1/payments", json=payment_body(4200, confirm=True, connector="mockrazorpay",
                                                          order_id=order["id"])).json()
        declined = [c.post("/v1/payments", json=payment_body(700, method=CARD_DECLINED, confirm=True,
                                                            connector="mockrazorpay")).json() for _ in range(2)]
        held = c.post("/v1/payments", json=payment_body(900, capture_method="manual", confirm=True,
                                                       connector="mockrazorpay")).json()
        pending = [c.post("/v1/payments", json=payment_body(500, method=UPI("pending@upi"), confirm=True,
                                                           connector="mockstripe")).json() for _ in range(2)]
        refund = c.post("/v1/refunds", json={"payment_id": ok[0]["id"], "amount": 300})
        expect(refund, 201)
        # Routed through flaky first: its 500s fall back to mockstripe, whose UPI success webhook follows.
        routing = c.put("/v1/routing", json={"strategy": "priority", "connectors": ["flaky", "mockstripe"]})
        expect(routing, 200)
        fell_back = None
        for _ in range(60):
            p = c.post("/v1/payments", json=payment_body(1300, method=UPI("success@upi"), confirm=True)).json()
            if [a["connector"] for a in p["attempts"]] == ["flaky", "mockstripe"]:
                fell_back = p
                break
        assert fell_back is not None, "no payment fell back from flaky in 60 tries"
        wait_for(lambda: c.get(f"/v1/payments/{fell_back['id']}").json()["status"] == "succeeded", timeout=20)
    assert all(p["status"] == "succeeded" for p in ok)
    assert held["status"] == "requires_capture"
    assert all(p["status"] == "processing" for p in pending)
    time.sleep(1.5)  # past every processing payment's 1 s deadline
    return {"key": key, "order": order, "ok": ok, "ordered": ordered, "declined": declined, "held": held,
            "pending": pending, "fell_back": fell_back, "endpoint": hook.json()}


def _all_payments(c: httpx.Client) -> list[dict]:
    out, after = [], None
    while True:
        page = c.get("/v1/payments", params={"limit": 100, **({"starting_after": after} if after else {})}).json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["data"][-1]["id"]


# --------------------------------------------------------------------------- API


def test_stats_match_the_payments_api(console_server, mix):
    with console_server.client(mix["key"]) as c:
        everything = _all_payments(c)
        stats = c.get("/v1/stats/payments", params={"window": "1h"}).json()
        overview = c.get("/v1/stats/overview").json()
    by_status: dict[str, int] = {}
    for p in everything:
        by_status[p["status"]] = by_status.get(p["status"], 0) + 1
    assert stats["object"] == "payment_stats"
    assert stats["bucket_s"] == 60
    assert len(stats["buckets"]) == 60
    assert {s: n for s, n in stats["totals"].items() if n} == by_status
    assert {s: n for s, n in overview["payments"].items() if n} == by_status
    # Every payment still processing is past its 1 s deadline by now.
    assert overview["processing_overdue"] == by_status.get("processing", 0) >= 2
    assert overview["review_required"] == sum(p["review_required"] for p in everything) == 0
    assert overview["realtime_connections"] == 0
    # Connector health over the window agrees with the per-minute series.
    health = {c["name"]: c for c in overview["connectors"]}
    for series in stats["connectors"]:
        c = health[series["name"]]
        assert (c["attempts"], c["success_rate"]) == (series["attempts_total"], series["success_rate_total"])
        assert (c["latency_ms_p50"], c["latency_ms_p99"]) == (series["latency_ms_p50"], series["latency_ms_p99"])
        assert c["state"] == "closed"


def test_success_rate_series_per_connector_from_attempts(console_server, mix):
    with console_server.client(mix["key"]) as c:
        stats = c.get("/v1/stats/payments").json()
        everything = _all_payments(c)
    attempts = [a for p in everything for a in p["attempts"] if a["status"] != "started"]
    connectors = {c["name"]: c for c in stats["connectors"]}
    assert set(connectors) == {"mockstripe", "mockrazorpay", "flaky"}
    for name, series in connectors.items():
        mine = [a for a in attempts if a["connector"] == name]
        ok = [a for a in mine if a["status"] in ("succeeded", "authorized")]
        assert series["attempts_total"] == len(mine), name
        assert series["succeeded_total"] == len(ok), name
        assert any(r is not None for r in series["success_rate"]), name
        assert series["latency_ms_p50"] is not None
        assert series["latency_ms_p99"] >= series["latency_ms_p50"]
    # mockrazorpay: 2 declines, 1 success (ordered), 1 authorisation → 50 %.
    assert connectors["mockrazorpay"]["success_rate_total"] == 0.5


def test_lists_behind_the_counters(console_server, mix):
    with console_server.client(mix["key"]) as c:
        overview = c.get("/v1/stats/overview").json()
        overdue = c.get("/v1/stats/lists/processing_overdue", params={"limit": 100}).json()
        failing = wait_for(lambda: (lambda page: page if page["data"] else None)(
            c.get("/v1/stats/lists/deliveries_failing", params={"limit": 100}).json()))
        overview = c.get("/v1/stats/overview").json()
        expect(c.get("/v1/stats/lists/nonsense"), 404)
        expect(c.get("/v1/stats/lists/review_required", params={"limit": "0"}), 400)
        page1 = c.get("/v1/stats/lists/processing_overdue", params={"limit": 1}).json()
        page2 = c.get("/v1/stats/lists/processing_overdue",
                      params={"limit": 1, "starting_after": page1["data"][0]["id"]}).json()
    assert len(overdue["data"]) == overview["processing_overdue"]
    assert {p["id"] for p in mix["pending"]} <= {p["id"] for p in overdue["data"]}
    assert all(p["status"] == "processing" for p in overdue["data"])
    assert page1["has_more"]
    assert page2["data"][0]["id"] != page1["data"][0]["id"]
    assert failing["data"][0]["object"] == "webhook_delivery"
    assert failing["data"][0]["attempts"]
    assert overview["deliveries_failing"] >= len(failing["data"]) > 0


def test_timeline_of_a_payment_that_fell_back(console_server, mix):
    payment = mix["fell_back"]
    with console_server.client(mix["key"]) as c:
        t = wait_for(lambda: (lambda t: t if any(e["type"] == "webhook_in" and e["data"]["status"] == "applied"
                                                 for e in t["entries"]) else None)(
            c.get(f"/v1/payments/{payment['id']}/timeline").json()))
    assert t["payment"]["id"] == payment["id"]
    assert t["payment"]["status"] == "succeeded"
    times = [e["at"] for e in t["entries"]]
    assert times == sorted(times)
    attempts = [e["data"] for e in t["entries"] if e["type"] == "attempt"]
    assert [(a["connector"], a["status"]) for a in attempts] == [("flaky", "failed"), ("mockstripe", "succeeded")]
    assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in attempts)
    (hook,) = [e["data"] for e in t["entries"] if e["type"] == "webhook_in"]
    assert hook["connector"] == "mockstripe"
    assert hook["event_type"] == "payment_intent.succeeded"
    assert hook["object"] == "inbox_item"
    assert "raw_body" not in hook
    events = [e["data"]["type"] for e in t["entries"] if e["type"] == "event"]
    assert events[0] == "payment.created"
    assert "payment.succeeded" in events
    assert any(e["type"] == "delivery" for e in t["entries"])


def test_timeline_includes_refunds_and_is_merchant_scoped(console_server, mix):
    other = console_server.create_merchant("someone else")
    with console_server.client(mix["key"]) as c:
        t = c.get(f"/v1/payments/{mix['ok'][0]['id']}/timeline").json()
    refunds = [e["data"] for e in t["entries"] if e["type"] == "refund"]
    assert [r["amount"] for r in refunds] == [300]
    with console_server.client(other) as c:
        expect(c.get(f"/v1/payments/{mix['ok'][0]['id']}/timeline"), 404)
        assert c.get("/v1/search", params={"q": mix["ok"][0]["id"]}).json()["data"] == []
        assert c.get("/v1/stats/overview").json()["payments"]["succeeded"] == 0


def test_search_by_each_kind_of_id(console_server, mix):
    fell_back = mix["fell_back"]
    txn = fell_back["attempts"][-1]["connector_txn_id"]
    with console_server.client(mix["key"]) as c:
        def search(q):
            r = c.get("/v1/search", params={"q": q})
            expect(r, 200)
            return [(p["id"], p["matched_on"]) for p in r.json()["data"]]

        assert search(fell_back["id"]) == [(fell_back["id"], "payment_id")]
        assert search(mix["order"]["id"]) == [(mix["ordered"]["id"], "order_id")]
        assert search(txn) == [(fell_back["id"], "connector_txn_id")]
        by_customer = search("cus_console")
        assert {p for p, _ in by_customer} == {p["id"] for p in mix["ok"]} | {mix["ordered"]["id"]}
        assert {m for _, m in by_customer} == {"customer_id"}
        assert search("nothing_like_this") == []
        expect(c.get("/v1/search"), 400)
        expect(c.get("/v1/search", params={"q": "x" * 256}), 400)
        assert c.get("/v1/stats/payments", params={"window": "2d"}).json()["error"]["param"] == "window"
        expect(c.get("/v1/stats/payments", params={"window": "1m"}), 400)
        wide = c.get("/v1/stats/payments", params={"window": "24h"}).json()
        half = c.get("/v1/stats/payments", params={"window": "12h"}).json()  # 12-minute buckets, minute rows
    assert wide["bucket_s"] == 3600  # whole hours, read from the hour rollups
    assert len(wide["buckets"]) == 24
    assert half["bucket_s"] == 720
    assert wide["totals"] == half["totals"]  # the same payments (all made minutes ago), whatever the rows read


async def test_realtime_connections_counted_and_listed(console_server, mix):
    async with http(console_server, mix["key"]) as api:
        tok = await token(api, "cus_console", device_id="phone")
        async with connect(console_server, tok) as ws:
            await welcome(ws)
            with trio.fail_after(15):
                while (await api.get("/v1/stats/overview")).json()["realtime_connections"] != 1:
                    await trio.sleep(0.1)
            listed = (await api.get("/v1/stats/lists/realtime_connections")).json()["data"]
            assert [(c["client_id"], c["device_id"]) for c in listed] == [("cus_console", "phone")]
        with trio.fail_after(15):
            while (await api.get("/v1/stats/overview")).json()["realtime_connections"] != 0:
                await trio.sleep(0.1)


def test_console_assets_are_served_and_confined(console_server):
    with console_server.client() as c:
        js = c.get("/dashboard/static/console.js")
        expect(js, 200)
        assert js.headers["content-type"].startswith("text/javascript")
        assert "default-src 'self'" in js.headers["content-security-policy"]
        expect(c.get("/dashboard/static/vendor/uplot/uPlot.iife.min.js"), 200)
        assert "MIT" in c.get("/dashboard/static/vendor/uplot/LICENSE").text
        for bad in ("../routes/dashboard.py", "../../docs/console.md", "..%2f..%2fdocs%2fconsole.md",
                    "dashboard.html", "nope.js"):
            expect(c.get(f"/dashboard/static/{bad}"), 404, note=bad)
        page = c.get("/dashboard/payments/pay_whatever")
        expect(page, 200)
        assert "console.js" in page.text


# ----------------------------------------------------------------------- browser


def _page(browser, server, key: str | None, width: int = 1280, admin: bool = False):
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.errors = []  # uncaught script errors, checked by the tests
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(server.url + "/dashboard/static/console.css")  # same origin, to seed sessionStorage
    init = ""
    if key:
        init += f"sessionStorage.setItem('paycast.key', {key!r});"
    if admin:
        init += f"sessionStorage.setItem('paycast.admin', {ADMIN_TOKEN!r});"
    if init:
        context.add_init_script(init)
    return context, page


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _axe(page) -> list[dict]:
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def _wait_overview(page) -> dict:
    page.wait_for_function("() => window.paycastConsole && window.paycastConsole.overview"
                           " && window.paycastConsole.stats", timeout=15_000)
    page.wait_for_selector("#state.live", timeout=15_000)
    return page.evaluate("() => window.paycastConsole.overview")


def test_overview_numbers_equal_the_api(console_server, mix, browser):
    context, page = _page(browser, console_server, mix["key"])
    try:
        page.goto(console_server.url + "/dashboard")
        _wait_overview(page)
        with console_server.client(mix["key"]) as c:
            overview = c.get("/v1/stats/overview").json()
        for counter in ("processing_overdue", "review_required", "deliveries_failing", "realtime_connections"):
            card = page.locator(f'[data-counter="{counter}"]')
            page.wait_for_function(
                "([c, v]) => document.querySelector(`[data-counter=\"${c}\"] .value`).textContent === String(v)",
                arg=[counter, overview[counter]], timeout=15_000)
            assert card.get_attribute("href").endswith(f"/{counter}"), counter
        assert page.text_content('[data-counter="processing_overdue"] .value') == str(len(mix["pending"]) + sum(
            1 for p in _all_payments(httpx.Client(base_url=console_server.url,
                                                  headers={"Authorization": f"Bearer {mix['key']}"}))
            if p["status"] == "processing" and p["id"] not in {q["id"] for q in mix["pending"]}))
        rows = page.locator("#connectors tbody tr")
        assert {rows.nth(i).get_attribute("data-connector") for i in range(rows.count())} >= {
            "mockstripe", "mockrazorpay", "flaky"}
        for c in overview["connectors"]:
            if c["attempts"]:
                assert page.text_content(f'#connectors tr[data-connector="{c["name"]}"] td.p99') != "—"
        # The counter is a link to the list behind it, and that list has as many rows.
        page.click('[data-counter="processing_overdue"]')
        page.wait_for_url("**/dashboard/lists/processing_overdue")
        page.wait_for_selector("#list tbody tr", timeout=15_000)
        assert page.locator("#list tbody tr").count() == overview["processing_overdue"]
    finally:
        context.close()


def test_success_rate_chart_has_points_for_each_connector(console_server, mix, browser):
    context, page = _page(browser, console_server, mix["key"])
    try:
        page.goto(console_server.url + "/dashboard")
        _wait_overview(page)
        page.wait_for_selector("#chart-success canvas", timeout=15_000)
        series = page.evaluate("""() => {
            const u = window.paycastConsole.charts.successRate;
            return u.series.slice(1).map((s, i) => ({label: s.label,
                points: u.data[i + 1].filter((v) => v != null).length}));
        }""")
        assert {s["label"] for s in series} == {"mockstripe", "mockrazorpay", "flaky"}
        assert all(s["points"] >= 1 for s in series), series
        label = page.get_attribute("#chart-success", "aria-label")
        assert "flaky" in label
        assert "mockstripe" in label
    finally:
        context.close()


def test_payment_page_shows_both_attempts_and_the_webhook(console_server, mix, browser):
    payment = mix["fell_back"]
    context, page = _page(browser, console_server, mix["key"])
    try:
        page.goto(console_server.url + f"/dashboard/payments/{payment['id']}")  # the shareable URL
        page.wait_for_selector("#attempts tbody tr", timeout=15_000)
        rows = page.locator("#attempts tbody tr")
        assert [rows.nth(i).get_attribute("data-connector") for i in range(rows.count())] == ["flaky", "mockstripe"]
        assert "ms" in rows.nth(0).locator("td").nth(2).text_content()
        page.wait_for_selector('#webhooks-in tr[data-connector="mockstripe"]', timeout=15_000)
        kinds = page.eval_on_selector_all("#timeline li", "els => els.map((e) => e.dataset.type)")
        assert kinds.count("attempt") == 2
        assert "webhook_in" in kinds
        assert "event" in kinds
        times = page.eval_on_selector_all("#timeline time", "els => els.map((e) => e.getAttribute('datetime'))")
        assert times == sorted(times)
        assert page.locator("h1").text_content().strip().endswith(payment["id"])
    finally:
        context.close()


def test_search_page_finds_by_order_and_customer(console_server, mix, browser):
    context, page = _page(browser, console_server, mix["key"])
    try:
        page.goto(console_server.url + "/dashboard")
        page.fill("#quick-q", mix["order"]["id"])
        page.keyboard.press("Enter")
        page.wait_for_selector(f'#results tr[data-id="{mix["ordered"]["id"]}"]', timeout=15_000)
        page.fill("#search-q", "cus_console")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length === 4", timeout=15_000)
        page.click(f'#results tr[data-id="{mix["ok"][0]["id"]}"] a')
        page.wait_for_selector("#attempts tbody tr", timeout=15_000)
        page.fill("#quick-q", mix["fell_back"]["id"])  # an exact payment id opens its page
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/dashboard/payments/{mix['fell_back']['id']}", timeout=15_000)
        page.wait_for_selector('#attempts tbody tr[data-connector="flaky"]', timeout=15_000)
    finally:
        context.close()



# Breaks exactly one payment's updates, as a bug or a bad row would: a real
# failure inside the webhook's apply transaction (as tests/e2e/test_inbox_dead_letters.py).
BREAK_ONE_PAYMENT = [
    "CREATE TABLE IF NOT EXISTS console_broken (id text PRIMARY KEY)",
    """CREATE OR REPLACE FUNCTION console_break_payment() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.id IN (SELECT id FROM console_broken) THEN RAISE EXCEPTION 'injected failure for %', NEW.id; END IF;
         RETURN NEW;
       END $$""",
    "DROP TRIGGER IF EXISTS console_break ON payments",
    "CREATE TRIGGER console_break BEFORE UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION console_break_payment()",
]


def _db(dsn: str, sql: str, *args) -> list[dict]:
    """:func:`db_fetch` from a thread: Playwright's sync API keeps an asyncio loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(db_fetch, dsn, sql, *args).result()


def test_dead_letter_appears_in_the_admin_view(console_server, mix, browser):
    # docs/api.md: an apply that fails is retried on PAYCAST_INBOX_RETRY_SCHEDULE (this
    # server: 0,1) and then the item is `dead`, listed by GET /admin/inbox?status=dead.
    stuck = mix["pending"][0]
    for statement in BREAK_ONE_PAYMENT:
        _db(console_server.dsn, statement)
    _db(console_server.dsn, "INSERT INTO console_broken VALUES ($1)", stuck["id"])
    event_id = f"evt_console_dead_{stuck['id']}"
    body = json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": stuck["attempts"][-1]["connector_txn_id"], "amount": stuck["amount"],
                                           "currency": "inr", "status": "succeeded",
                                           "metadata": {"payment_id": stuck["id"]}}}}).encode()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with console_server.client() as c:
        expect(c.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)
        dead = wait_for(lambda: [i for i in c.get("/admin/inbox", params={"status": "dead", "limit": 100},
                                                  headers=admin).json()["data"] if i["event_id"] == event_id],
                        timeout=30, interval=0.3)
        total = len(c.get("/admin/inbox", params={"status": "dead", "limit": 100}, headers=admin).json()["data"])
    context, page = _page(browser, console_server, mix["key"], admin=True)
    try:
        page.goto(console_server.url + "/dashboard/admin?status=dead")
        row = page.wait_for_selector(f'#inbox tr[data-id="{dead[0]["id"]}"][data-status="dead"]', timeout=15_000)
        assert "injected failure" in row.text_content()
        assert row.query_selector("button") is not None  # a dead letter can be replayed from here
        page.goto(console_server.url + "/dashboard")
        page.wait_for_function("(n) => document.querySelector('[data-counter=inbox_dead] .value').textContent"
                               " === String(n)", arg=total, timeout=15_000)
    finally:
        context.close()


def _no_sideways_scroll(page, what: str, width: int) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the {what} page scrolls sideways by {overflow}px at {width}px"


@pytest.mark.parametrize("width", [1280, 390])
def test_screenshots_and_accessibility(console_server, mix, browser, width):
    """Every page at a desktop and a phone width: a screenshot under tests/artifacts/,
    no sideways scrolling of the page itself, and no serious or critical axe-core violation."""
    context, page = _page(browser, console_server, mix["key"], width=width, admin=True)
    pages = [
        ("overview", "/dashboard", "#chart-success canvas"),
        ("payment", f"/dashboard/payments/{mix['fell_back']['id']}", "#attempts tbody tr"),
        ("search", "/dashboard/search?q=cus_console", "#results tbody tr"),
        ("list", "/dashboard/lists/deliveries_failing", "#list tbody tr"),
        ("admin", "/dashboard/admin", "#tasks:not(:empty)"),
    ]
    try:
        found: dict[str, list] = {}
        for name, path, ready in pages:
            page.goto(console_server.url + path)
            page.wait_for_selector(ready, timeout=15_000)
            page.wait_for_selector("#state.live", timeout=15_000)
            page.wait_for_timeout(200)  # let charts and fonts settle before the picture
            _screenshot(page, f"console-{name}-{width}.png")
            _no_sideways_scroll(page, name, width)
            found[name] = _axe(page)
        assert not any(found.values()), found
        assert page.errors == []
    finally:
        context.close()


def test_overview_of_a_merchant_with_nothing_yet(console_server, browser):
    context, page = _page(browser, console_server, console_server.create_merchant("empty"))
    try:
        page.goto(console_server.url + "/dashboard")
        overview = _wait_overview(page)
        assert overview["payments"] == {s: 0 for s in overview["payments"]}
        for counter in ("processing_overdue", "review_required", "deliveries_failing", "realtime_connections"):
            assert page.text_content(f'[data-counter="{counter}"] .value') == "0"
        assert "Admin token needed" in page.text_content('[data-counter="inbox_dead"]')
        assert page.locator("#payments tbody tr").count() == 0
        assert page.errors == []
    finally:
        context.close()


def test_keyboard_reaches_every_counter_and_the_skip_link(console_server, mix, browser):
    context, page = _page(browser, console_server, mix["key"])
    try:
        page.goto(console_server.url + "/dashboard")
        _wait_overview(page)
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        reached = set()
        for _ in range(40):
            page.keyboard.press("Tab")
            counter = page.evaluate("() => document.activeElement.dataset.counter || null")
            if counter:
                reached.add(counter)
        assert reached == {"processing_overdue", "review_required", "inbox_dead", "inbox_unmatched",
                           "deliveries_failing", "realtime_connections"}
    finally:
        context.close()

