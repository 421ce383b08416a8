"""``GET /dashboard``: one static page where an operator pastes an API key and
watches the merchant's payments change live (no build step, no framework).

The page follows the merchant's event log by polling
``/v1/events?after_seq=`` (see the script in ``app/static/dashboard.html``):
the per-merchant ``seq`` is gap-free, so the page never misses a change and
needs nothing beyond the public API.
"""

from __future__ import annotations

import pathlib

from quart import Blueprint, Response

bp = Blueprint("dashboard", __name__)
_PAGE = (pathlib.Path(__file__).resolve().parent.parent / "static" / "dashboard.html").read_bytes()


@bp.get("/dashboard")
async def dashboard():
    return Response(_PAGE, content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "no-referrer"})
