"""Operations: health, readiness, metrics and the live task tree."""

from __future__ import annotations

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app, request

from app.auth import admin_required
from app.body import json_response
from domain.errors import Unavailable
from storage import migrate

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
async def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
async def readyz():
    system = current_app.config["SYSTEM"]
    current = await system.db.run(migrate.is_current)
    if not current:
        raise Unavailable("Migrations are not applied yet.")
    return json_response({"status": "ready", "database": "ok", "migrations": "current"})


async def _payment_counts(conn) -> list:
    return await conn.fetch("SELECT status, count(*) AS n FROM payments GROUP BY status")


@bp.get("/metrics")
async def metrics():
    system = current_app.config["SYSTEM"]
    m = current_app.config["METRICS"]
    try:
        rows = await system.db.run(_payment_counts)
        m.db_up.set(1)
        for status in ("requires_confirmation", "processing", "requires_capture", "succeeded", "failed", "canceled"):
            m.payments.labels(status).set(next((r["n"] for r in rows if r["status"] == status), 0))
    except Unavailable:
        m.db_up.set(0)
    if system.payments is not None:
        m.actors.labels("payment").set(len(system.payments))
        m.actor_crashes.labels("payment").set(system.payments.crashes)
    hub = system.realtime.hub
    m.ws_connections.set(len(hub))
    if hub.slow_closes > m.ws_slow_reported:
        m.ws_slow_consumer_closes.inc(hub.slow_closes - m.ws_slow_reported)
        m.ws_slow_reported = hub.slow_closes
    now = trio.current_time()
    for name, breaker in system.breakers.items():
        state = breaker.state(now)
        for s in ("closed", "open", "half_open"):
            m.connector_state.labels(name, s).set(1 if s == state else 0)
    return Response(generate_latest(m.registry), content_type=CONTENT_TYPE_LATEST)


def _task_tree(task: trio.lowlevel.Task) -> dict:
    children = [_task_tree(child) for nursery in task.child_nurseries for child in nursery.child_tasks]
    return {"name": task.name, "children": sorted(children, key=lambda c: c["name"])}


def _as_text(node: dict, prefix: str = "", last: bool = True, root: bool = True) -> list[str]:
    lines = [node["name"] if root else f"{prefix}{'└── ' if last else '├── '}{node['name']}"]
    child_prefix = "" if root else prefix + ("    " if last else "│   ")
    for i, child in enumerate(node["children"]):
        lines += _as_text(child, child_prefix, i == len(node["children"]) - 1, False)
    return lines


@bp.get("/debug/tasks")
@admin_required
async def debug_tasks():
    """The live trio task tree; ``?format=json`` for JSON (default text)."""
    tree = _task_tree(trio.lowlevel.current_root_task())
    if request.args.get("format") == "json" or "application/json" in request.headers.get("Accept", ""):
        return json_response(tree)
    return Response("\n".join(_as_text(tree)) + "\n", content_type="text/plain; charset=utf-8")
