"""The live payments dashboard in a real headless Chromium (Debian's
``chromium``, driven by Playwright for Python; no browser download).

Skips with the reason when Playwright or Chromium is missing on a developer
machine; in CI (``CI`` or ``PAYCAST_REQUIRE_CHROMIUM`` set, as ``.ci/run`` does)
a missing part fails the run instead (tests.support.skip_or_fail)."""

from __future__ import annotations

import os

import pytest

from tests.support import CARD_DECLINED, payment_body, skip_or_fail

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("playwright (pip package) is not installed")
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    skip_or_fail("no Chromium at /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()  # fresh sessionStorage per test
    try:
        yield context.new_page()
    finally:
        context.close()


def _badge(page, payment_id: str, status: str):
    return page.wait_for_selector(f'tr[data-id="{payment_id}"] .badge.status-{status}', timeout=15_000)


def test_dashboard_shows_payments_and_their_status_changes_live(server, api_key, page):
    with server.client(api_key) as c:
        before = c.post("/v1/payments", json=payment_body(1500, confirm=True)).json()
    assert before["status"] == "succeeded"

    response = page.goto(server.url + "/dashboard")
    assert response.status == 200
    assert "text/html" in response.headers["content-type"]
    page.fill("#api-key", api_key)
    page.click("#connect")
    _badge(page, before["id"], "succeeded")  # the snapshot loaded
    page.wait_for_selector("#state.live")

    with server.client(api_key) as c:  # now change things while the page watches
        held = c.post("/v1/payments", json=payment_body(2500, capture_method="manual", confirm=True,
                                                       customer_id="cus_dash")).json()
        declined = c.post("/v1/payments", json=payment_body(700, method=CARD_DECLINED, confirm=True)).json()
    _badge(page, held["id"], "requires_capture")
    _badge(page, declined["id"], "failed")
    with server.client(api_key) as c:
        assert c.post(f"/v1/payments/{held['id']}/capture", json={}).json()["status"] == "succeeded"
    badge = _badge(page, held["id"], "succeeded")

    colour = badge.evaluate("el => getComputedStyle(el).backgroundColor")
    assert colour == "rgb(47, 125, 58)"  # succeeded is green (#2f7d3a, AA contrast with white)
    failed_colour = page.eval_on_selector(f'tr[data-id="{declined["id"]}"] .badge',
                                          "el => getComputedStyle(el).backgroundColor")
    assert failed_colour == "rgb(201, 42, 42)"  # failed is red (#c92a2a)
    page.wait_for_function(
        "() => document.querySelector('#counts [data-status=succeeded] .n').textContent === '2'"
        " && document.querySelector('#counts [data-status=failed] .n').textContent === '1'"
        " && document.querySelector('#counts [data-status=requires_capture] .n').textContent === '0'",
        timeout=15_000)
    assert page.locator("#payments tbody tr").count() == 3
    assert page.text_content(f'tr[data-id="{held["id"]}"] .customer') == "cus_dash"
    if os.environ.get("PAYCAST_DASHBOARD_SCREENSHOT"):
        page.screenshot(path=os.environ["PAYCAST_DASHBOARD_SCREENSHOT"], full_page=True)


def test_dashboard_says_so_when_the_key_is_wrong(server, page):
    page.goto(server.url + "/dashboard")
    page.fill("#api-key", "sk_test_not_a_key")
    page.click("#connect")
    page.wait_for_selector("#state.error", timeout=10_000)
    assert "not accepted" in page.text_content("#state")
