"""One request id per HTTP request, chosen once at the edge and kept in the ASGI scope.

The outermost layers (:class:`app.deadline.RequestDeadline`) need the id before
Quart runs, and Quart's ``before_request`` and the ASGI webhooks endpoint log
and answer with it: all of them call :func:`request_id_of`, so the 503 of a
request past its deadline and the request's own log lines carry the same id.
"""

from __future__ import annotations

from domain.ids import request_id

# A key of our own in the ASGI scope (hypercorn passes the scope dict through untouched).
SCOPE_KEY = "paycast.request_id"


def request_id_of(scope: dict) -> str:
    """The request's id: the one already chosen for ``scope``, else the client's ``X-Request-Id``
    when usable (:func:`domain.ids.request_id`), else a new one; remembered in ``scope``.

    Args:
      scope: the ASGI scope of the request.

    Returns:
      The id, the same on every call for one scope.
    """
    chosen = scope.get(SCOPE_KEY)
    if chosen is None:
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"x-request-id"), None)
        chosen = scope[SCOPE_KEY] = request_id(given)
    return chosen
