"""Free each hypercorn connection's objects by reference counting when it ends.

Why (issue 22): hypercorn's objects of one TCP connection reference each other
in cycles (``TCPServer`` ↔ ``ProtocolWrapper`` through the bound
``protocol_send``, ``H11Protocol`` ↔ its ``WSStream``, h11's and wsproto's
state): measured with ``bench/gc_idle.py --probe-freeze --garbage``, ~60 of the
~175 objects the collector tracks per idle WebSocket are left as cyclic garbage
when it closes. Only a full collection frees them. With the long-lived objects
frozen (:mod:`actors.collector`), such garbage would never be freed at all. So
when a connection's ``TCPServer.run()`` has returned (its task group waited for
the app's tasks: nothing of that connection runs any more), the ``__dict__`` of
every hypercorn/h11/wsproto object it reached is cleared: the cycles are broken
and reference counting frees the connection at once.

Shared objects are never touched: the app, the config, the worker context and
the lifespan state (the same for every connection) are not walked into, nor are
classes and enum members. Installed by :func:`install` (``app.server.serve_http``)
as hypercorn's ``TCPServer`` in ``hypercorn.trio.run``; a hypercorn that does
not look as expected is left alone (then only the collector frees them, as
before). Upstream text: docs/upstream/hypercorn-connection-cycles.md.
"""

from __future__ import annotations

import collections
import enum
import logging

log = logging.getLogger("paycast.http")

_OWN = frozenset({"hypercorn", "h11", "wsproto"})
_SHARED = ("app", "config", "context", "state")
_LIMIT = 20_000  # objects walked per connection at most (an idle WebSocket reaches a few hundred)


def _ours(obj) -> bool:
    return (type(obj).__module__ or "").partition(".")[0] in _OWN


def unlink(server) -> int:
    """Clear the ``__dict__`` of every hypercorn, h11 or wsproto object reachable from
    ``server`` (a finished ``TCPServer``) except the shared ones; returns how many."""
    seen = {id(getattr(server, name, None)) for name in _SHARED}
    stack = [server]
    cleared = walked = 0
    while stack and walked < _LIMIT:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        walked += 1
        if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (type, enum.Enum)) or not (obj is server or _ours(obj)):
            continue
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.extend(attrs.values())
                attrs.clear()
                cleared += 1
    return cleared


def install() -> bool:
    """Make hypercorn's trio worker tear every connection down with :func:`unlink`."""
    try:
        from hypercorn.trio import run as trio_run
        from hypercorn.trio.tcp_server import TCPServer
    except ImportError:  # pragma: no cover - another server
        return False
    current = getattr(trio_run, "TCPServer", None)
    if current is not None and getattr(current, "_paycast_unlinks", False):
        return True
    # hypercorn's own, or app.trio_edge's subclass of it (installed first by app/server.py).
    if not (current is TCPServer or getattr(current, "_paycast_edge", False)) or not hasattr(current, "run"):
        log.warning("hypercorn's TCPServer is not as expected; connection teardown not installed")
        return False

    class UnlinkingTCPServer(current):
        _paycast_unlinks = True

        async def run(self) -> None:
            try:
                await super().run()
            finally:
                unlink(self)

    trio_run.TCPServer = UnlinkingTCPServer
    return True
