"""How request handlers reach the components: a typed app attribute.

Every blueprint calls :func:`components` (never ``current_app.config``); the
app is a :class:`PaycastApp`, built by :func:`app.server.create_app` around the
process's :class:`components.Components`.
"""

from __future__ import annotations

from typing import cast

from quart import current_app
from quart_trio import QuartTrio

from app.merchant_keys import MerchantKeys
from app.quart_http import CycleFreeMap, InlineHTTPConnection, PaycastRequest
from components import Components


class PaycastApp(QuartTrio):
    """The quart-trio app, carrying the process's components, with what Quart does per
    request trimmed by :mod:`app.quart_http` (no tasks per request, a URL matcher without
    a reference cycle per request)."""

    components: Components
    merchant_keys: MerchantKeys  # shared with the hot POSTs' ASGI endpoint (app/merchant_endpoint.py)
    asgi_http_class = InlineHTTPConnection
    request_class = PaycastRequest
    url_map_class = CycleFreeMap


def components() -> Components:
    """The components of the app serving the current request (or app context)."""
    return cast(PaycastApp, current_app).components


def merchant_keys() -> MerchantKeys:
    """The API-key lookup and rate limits of the app serving the current request."""
    return cast(PaycastApp, current_app).merchant_keys
