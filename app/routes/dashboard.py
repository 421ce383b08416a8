"""The operator console: static pages (no build step, no framework) that talk
only to the public HTTP API with the operator's API key (and, for the
operator-only parts, the admin token), both kept in the tab's sessionStorage.

Pages (one HTML shell; ``app/static/console.js`` renders the view its URL names):
- ``/dashboard``: overview (live charts, counters, connector health, live payments);
- ``/dashboard/payments/{payment_id}``: one payment's timeline (a shareable URL);
- ``/dashboard/search?q=``: search by payment, order, customer, connector transaction id;
- ``/dashboard/lists/{name}``: the objects behind an overview counter;
- ``/dashboard/admin``: gateway webhook inbox and the live task tree (admin token).

Assets are served from ``/dashboard/static/`` (the vendored uPlot among them).
"""

from __future__ import annotations

import pathlib

from quart import Blueprint, Response

from domain.errors import NotFound

bp = Blueprint("dashboard", __name__)
STATIC_DIR = (pathlib.Path(__file__).resolve().parent.parent / "static").resolve()
_SHELL = (STATIC_DIR / "dashboard.html").read_bytes()
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}
# The pages load scripts and styles from this origin only; the API is same-origin too.
_HEADERS = {
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
                                " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
}


def _shell() -> Response:
    return Response(_SHELL, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store", **_HEADERS})


@bp.get("/dashboard")
async def dashboard():
    return _shell()


@bp.get("/dashboard/payments/<payment_id>")
async def payment_page(payment_id: str):
    return _shell()  # the page reads the id from its URL and asks the API (404s are shown there)


@bp.get("/dashboard/search")
async def search_page():
    return _shell()


@bp.get("/dashboard/lists/<name>")
async def list_page(name: str):
    return _shell()


@bp.get("/dashboard/admin")
async def admin_page():
    return _shell()


@bp.get("/dashboard/static/<path:name>")
async def static_file(name: str):
    """A file under app/static (never outside it; only script, style and text files).

    Raises:
      NotFound: no such file, or a name that leaves the directory.
    """
    path = (STATIC_DIR / name).resolve()
    kind = _TYPES.get(path.suffix) if path.name != "LICENSE" else _TYPES[".txt"]
    if kind is None or not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise NotFound(f"No such file: '{name}'", param="name")
    return Response(path.read_bytes(), content_type=kind,
                    headers={"Cache-Control": "public, max-age=300", **_HEADERS})

