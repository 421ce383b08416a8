"""The hypercorn settings every Paycast server runs with, in one place.

``app.server.serve_http`` serves with them; bench/edge_floor.py gives them to
the bare apps it measures, so a floor is measured with the settings production
uses (what matters per request: logs, keep-alive, h11's head limit).
"""

from __future__ import annotations

import logging

from hypercorn.config import Config


def configure(config: Config) -> Config:
    """Apply Paycast's per-server settings to ``config`` (binding and TLS are the caller's).

    Returns:
      ``config``, changed in place.
    """
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 30
    # h11 refuses a request head still incomplete beyond this with a bare 431
    # (no body). It must sit well above app.limits.MAX_HEADER_BYTES (32 KiB), so
    # that a head up to this size always reaches BodyLimit and its typed 431
    # whatever the TCP chunking: at 64 KiB, a 100 KB head read as 30 KB + 64 KB
    # crosses it incomplete and gets the bare one. Bodies are
    # bounded elsewhere (BodyLimit, quart).
    config.h11_max_incomplete_size = 128 * 1024
    # Realtime: client frames are tiny (the app refuses > 4 KiB with an error
    # frame); anything over this is closed by hypercorn with 1009.
    config.websocket_max_message_size = 64 * 1024
    # Thousands of WebSocket clients may connect at once (default 100 drops SYNs).
    config.backlog = 2048
    return config
