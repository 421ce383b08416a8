"""``/v1/webhook_endpoints``: merchants' outgoing webhook endpoints and their deliveries."""

from __future__ import annotations

import trio
from quart import Blueprint, g

from components.webhooks_out import resolve_host
from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.schemas import CreateWebhookEndpoint, Empty
from domain import outgoing_webhooks as rules
from domain import render
from domain.errors import InvalidRequest

bp = Blueprint("webhook_endpoints", __name__)
# How long creating an endpoint may wait for DNS when private URLs are refused.
_RESOLVE_TIMEOUT_S = 2.0



async def _refuse_private(host: str) -> None:
    """With ``PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS=false``, refuse loopback and private hosts.

    A name is resolved now (the dispatcher checks again at each send, since
    DNS answers change); a name that does not resolve is accepted: sends to it
    fail and are retried.

    Raises:
      InvalidRequest: ``param`` url.
    """
    kind = rules.classify_host(host)
    private = kind is rules.HostKind.PRIVATE
    if kind is rules.HostKind.NAME:
        with trio.move_on_after(_RESOLVE_TIMEOUT_S):
            try:
                private = any(rules.is_private_address(a) for a in await resolve_host(host))
            except OSError:
                private = False
    if private:
        raise InvalidRequest("url must not point at a loopback or private address.", param="url",
                             code="url_not_allowed")


@bp.post("/v1/webhook_endpoints")
@merchant_required
@idempotent
async def create_endpoint():
    body = await parse(CreateWebhookEndpoint)
    url, host = rules.validate_url(body.url)
    events = rules.validate_enabled_events(body.enabled_events)
    if not components().webhooks_out.allow_private_urls:
        await _refuse_private(host)
        if not url.lower().startswith("https://"):
            raise InvalidRequest("url must be an https:// URL (http is allowed only with "
                                 "PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS=true, for development).", param="url",
                                 code="url_not_https")
    endpoint = await components().webhooks_out.create_endpoint(g.merchant_id, url, events, body.description)
    return json_response(endpoint, 201)


@bp.get("/v1/webhook_endpoints")
@merchant_required
async def list_endpoints():
    limit, after, _ = page_params()
    items, more = await components().webhooks_out.list_endpoints(g.merchant_id, limit=limit,
                                                                 starting_after=after)
    return json_response(render.page(items, more))


@bp.get("/v1/webhook_endpoints/<endpoint_id>")
@merchant_required
async def get_endpoint(endpoint_id: str):
    return json_response(await components().webhooks_out.get_endpoint(g.merchant_id, endpoint_id))


@bp.delete("/v1/webhook_endpoints/<endpoint_id>")
@merchant_required
async def delete_endpoint(endpoint_id: str):
    return json_response(await components().webhooks_out.delete_endpoint(g.merchant_id, endpoint_id))


@bp.get("/v1/webhook_endpoints/<endpoint_id>/deliveries")
@merchant_required
async def list_deliveries(endpoint_id: str):
    limit, after, filters = page_params(extra_filters=("status", "event_id"))
    items, more = await components().webhooks_out.list_deliveries(g.merchant_id, endpoint_id,
                                                                  limit=limit, starting_after=after, filters=filters)
    return json_response(render.page(items, more))


@bp.post("/v1/webhook_endpoints/<endpoint_id>/deliveries/<delivery_id>/retry")
@merchant_required
@idempotent
async def retry_delivery(endpoint_id: str, delivery_id: str):
    await parse(Empty)
    delivery = await components().webhooks_out.retry(g.merchant_id, endpoint_id, delivery_id)
    return json_response(delivery)
