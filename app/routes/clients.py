"""Client libraries Paycast serves itself: ``/static/paycast-realtime.js``.

Served by every role (like ``/healthz``), so the realtime role serves the file
too and the module's default WebSocket URL — ``/v1/realtime`` on the server it
was loaded from (``import.meta.url``) — points at a server that has the socket.
The source lives in ``clients/js/`` (with its ``.d.ts`` and tests).
"""

from __future__ import annotations

import pathlib

from quart import Blueprint, Response

bp = Blueprint("clients", __name__)
CLIENTS_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "clients" / "js"
_FILES = {
    "paycast-realtime.js": "text/javascript; charset=utf-8",
    "paycast-realtime.d.ts": "text/plain; charset=utf-8",
}
# A page on any origin may import the module (`<script type="module">` fetches with CORS);
# it carries no credentials and reads nothing of the page's.
_HEADERS = {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff",
            "Cache-Control": "public, max-age=300"}


def _serve(name: str) -> Response:
    return Response((CLIENTS_DIR / name).read_bytes(), content_type=_FILES[name], headers=_HEADERS)


@bp.get("/static/paycast-realtime.js")
async def realtime_js():
    return _serve("paycast-realtime.js")


@bp.get("/static/paycast-realtime.d.ts")
async def realtime_types():
    return _serve("paycast-realtime.d.ts")
