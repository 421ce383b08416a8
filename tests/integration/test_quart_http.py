"""app/quart_http.py: Quart served without tasks per request, in process (ASGI messages in, messages out).

What must hold whatever the adapter cuts: the body read whole however it is chunked,
its limit (413) and its timeout (408), a client gone mid-body ends the request with no
answer, a client gone later ends a long request (app/deadline.py's late reader, as
quart-trio's reader task did), streamed responses still stream, and the URL matcher
answers exactly as werkzeug's without leaving a reference cycle per match.
"""

from __future__ import annotations

import gc
import json
import re

import pytest
import trio
from quart import request
from werkzeug.routing.matcher import StateMachineMatcher

from app.context import PaycastApp
from app.deadline import RequestDeadline
from app.quart_http import CycleFreeMatcher
from telemetry.app_metrics import Metrics

pytestmark = pytest.mark.timeout(20)


#: Requests whose handler went on past reading its body, per app.
AFTER_BODY: dict[int, int] = {}


def _app() -> PaycastApp:
    app = PaycastApp("quart_http_test", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1000
    AFTER_BODY[id(app)] = 0

    @app.post("/echo")
    async def echo():
        data = await request.get_data()
        AFTER_BODY[id(app)] += 1
        return {"length": len(data), "first": data[:1].decode()}

    @app.post("/slow")
    async def slow():
        await request.get_data()
        await trio.sleep(5)
        AFTER_BODY[id(app)] += 1
        return {"slow": True}

    @app.get("/stream")
    async def stream():
        async def chunks():
            for part in (b"a", b"b", b"c"):
                yield part

        return chunks(), 200, {"Content-Type": "text/plain"}

    @app.get("/items/<item_id>")
    async def item(item_id: str):
        return {"id": item_id}

    return app


def _scope(method: str, path: str, length: int | None = None) -> dict:
    headers = [(b"host", b"paycast")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "extensions": {}}


async def _serve(app, scope: dict, messages: list[dict | None]) -> list[dict]:
    """Run one request: ``receive`` hands over ``messages`` in order (``None``: block for good)."""
    sent: list[dict] = []
    pending = list(messages)

    async def receive() -> dict:
        if not pending or pending[0] is None:
            await trio.sleep_forever()
        return pending.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _status_and_body(sent: list[dict]) -> tuple[int, bytes]:
    assert sent and sent[0]["type"] == "http.response.start", sent
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_body_in_chunks_is_read_whole_and_answered_in_two_messages():
    app = _app()
    chunks = [{"type": "http.request", "body": b"x" * 300, "more_body": True} for _ in range(2)]
    chunks.append({"type": "http.request", "body": b"y" * 100, "more_body": False})
    sent = await _serve(app, _scope("POST", "/echo", 700), chunks)
    status, body = _status_and_body(sent)
    assert (status, json.loads(body)) == (200, {"first": "x", "length": 700}), (status, body)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    assert sent[1]["more_body"] is False, sent


async def test_a_body_over_the_limit_is_413_declared_or_not():
    app = _app()
    sent = await _serve(app, _scope("POST", "/echo", 5000), [None])  # declared: refused before any read
    assert _status_and_body(sent)[0] == 413, sent
    chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True} for _ in range(2)] + [None]
    sent = await _serve(app, _scope("POST", "/echo"), chunks)  # chunked: refused once over the limit
    assert _status_and_body(sent)[0] == 413, sent
    assert AFTER_BODY[id(app)] == 0


async def test_a_stalled_body_is_408():
    app = _app()
    app.config["BODY_TIMEOUT"] = 0.05
    sent = await _serve(app, _scope("POST", "/echo", 10), [{"type": "http.request", "body": b"12", "more_body": True},
                                                            None])
    assert _status_and_body(sent)[0] == 408, sent


async def test_a_client_gone_mid_body_ends_the_request_without_an_answer():
    app = _app()
    sent = await _serve(app, _scope("POST", "/echo", 10), [{"type": "http.request", "body": b"12", "more_body": True},
                                                            {"type": "http.disconnect"}])
    assert sent == [], "nobody is there to answer"
    assert AFTER_BODY[id(app)] == 0, "the handler was cancelled at the disconnect"


def _gone_after(seconds: float | None):
    """A ``receive``: the whole (small) body, then ``http.disconnect`` after ``seconds`` (None: never)."""
    given = []

    async def receive() -> dict:
        if not given:
            given.append(1)
            return {"type": "http.request", "body": b"{}", "more_body": False}
        if seconds is None:
            await trio.sleep_forever()
        await trio.sleep(seconds)
        return {"type": "http.disconnect"}

    return receive


async def test_a_client_gone_after_its_body_ends_a_long_request(autojump_clock):
    app = _app()
    layer = RequestDeadline(app, 60, Metrics())
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    started = trio.current_time()
    await layer(_scope("POST", "/slow", 2), _gone_after(0.2), send)
    assert sent == [] and AFTER_BODY[id(app)] == 0, "the handler was cancelled once its client had gone"
    assert trio.current_time() - started < 3, "within the late reader's delay (1 s) and the watchdog's sweep (1 s)"


async def test_a_long_request_whose_client_stays_is_answered(autojump_clock):
    app = _app()
    layer = RequestDeadline(app, 60, Metrics())
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await layer(_scope("POST", "/slow", 2), _gone_after(None), send)
    status, body = _status_and_body(sent)
    assert (status, json.loads(body)) == (200, {"slow": True}), sent
    assert AFTER_BODY[id(app)] == 1


async def test_a_streamed_response_still_streams():
    sent = await _serve(_app(), _scope("GET", "/stream"), [{"type": "http.request", "body": b"", "more_body": False}])
    assert _status_and_body(sent) == (200, b"abc"), sent
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b"c", b""], sent


async def test_an_unknown_path_and_a_wrong_method_are_quarts_answers():
    app = _app()
    empty = [{"type": "http.request", "body": b"", "more_body": False}]
    assert _status_and_body(await _serve(app, _scope("GET", "/nowhere"), empty))[0] == 404
    assert _status_and_body(await _serve(app, _scope("GET", "/echo"), empty))[0] == 405
    status, body = _status_and_body(await _serve(app, _scope("GET", "/items/it_1"), empty))
    assert (status, json.loads(body)) == (200, {"id": "it_1"})


def _outcome(adapter, path: str, method: str):
    try:
        rule, args = adapter.match(path, method, return_rule=True)
        return "match", rule.rule, args
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return type(exc).__name__, getattr(exc, "new_url", None), sorted(getattr(exc, "valid_methods", None) or ())


def test_the_matcher_answers_as_werkzeugs_on_every_route_of_the_app():
    from app.server import create_app
    from config import load_settings

    class Components:
        settings = load_settings()
        db = None
        realtime = None

    app = create_app(Components(), "adm_test")
    url_map = app.url_map
    assert type(url_map._matcher) is CycleFreeMatcher
    paths = {"/", "/nowhere", "//v1//payments", "/v1/payments/", "/v1/payments/pay_1/confirm/"}
    for rule in url_map.iter_rules():
        filled = re.sub(r"<[^>]+>", "x_1", rule.rule)
        paths |= {filled, filled + "/", filled.rstrip("/") + "/extra"}
    checked = 0
    for path in sorted(paths):
        for method in ("GET", "POST", "DELETE", "QUERY"):
            adapter = url_map.bind("paycast", path_info=path, default_method=method)
            ours = _outcome(adapter, path, method)
            url_map._matcher.__class__ = StateMachineMatcher
            try:
                theirs = _outcome(adapter, path, method)
            finally:
                url_map._matcher.__class__ = CycleFreeMatcher
            assert ours == theirs, (path, method, ours, theirs)
            checked += 1
    assert checked > 400, checked


def test_a_match_leaves_no_reference_cycle():
    app = _app()
    adapter = app.url_map.bind("paycast")
    adapter.match("/items/warm", "GET")  # the map's first match builds its state
    gc.collect()
    gc.disable()
    try:
        for i in range(200):
            adapter.match(f"/items/it_{i}", "GET")
        assert gc.collect() == 0, "each match left cyclic garbage"
        app.url_map._matcher.__class__ = StateMachineMatcher
        for i in range(200):
            adapter.match(f"/items/it_{i}", "GET")
        assert gc.collect() > 0, "werkzeug's matcher no longer makes a cycle: CycleFreeMatcher can go"
    finally:
        app.url_map._matcher.__class__ = CycleFreeMatcher
        gc.enable()
