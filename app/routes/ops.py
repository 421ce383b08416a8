"""Operations: health, readiness, metrics and the live task tree."""

from __future__ import annotations

import gc
import os
import time

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app, request

from app.auth import admin_required
from app.body import json_response
from app.context import components
from domain.errors import InvalidRequest, Unavailable
from domain.payments import Status
from telemetry import metrics as event_metrics

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
async def healthz():
    # Which process answered: `run.py serve --workers N` serves one port from N processes.
    return json_response({"status": "ok"}, headers={"Paycast-Pid": str(os.getpid())})


@bp.get("/readyz")
async def readyz():
    system = components()
    current = await system.operations.migrations_current()
    if not current:
        raise Unavailable("Migrations are not applied yet.")
    return json_response({"status": "ready", "database": "ok", "migrations": "current"})


@bp.get("/metrics")
async def metrics():
    system = components()
    m = current_app.config["METRICS"]
    try:
        counts = await system.operations.counts()
        m.db_up.set(1)
        by_status = {r["status"]: r["n"] for r in counts["payments"]}
        for status in (s.value for s in Status):
            m.payments.labels(status).set(by_status.get(status, 0))
        inbox_rows = counts["inbox"]
        for status in ("pending", "applied", "ignored", "unmatched", "unhandled", "dead"):
            m.inbox_rows.labels(status).set(inbox_rows.get(status, 0))
        m.inbox_pending.set(inbox_rows.get("pending", 0))
        m.inbox_dead.set(inbox_rows.get("dead", 0))
        m.inbox_unmatched.set(inbox_rows.get("unmatched", 0))
        m.inbox_lag.set(counts["inbox_lag"])
        m.reconcile_backlog.set(counts["backlog"])
        m.review_required.set(counts["review"])
        m.stuck_payments.set(counts["stuck"])
        for status in ("pending", "succeeded", "failed"):
            m.deliveries.labels(status).set(counts["deliveries"].get(status, 0))
        m.outbox_lag.set(counts["outbox_lag"])
    except Unavailable:
        m.db_up.set(0)
    for kind, registry in (("payment", system.payments.registry), ("account", system.accounts.registry)):
        if registry is not None:
            m.actors.labels(kind).set(len(registry))
            m.actor_crashes.labels(kind).set(registry.crashes)
    hub = system.realtime.hub
    m.ws_connections.set(len(hub))
    for path, n in hub.sockets.items():
        m.ws_sockets.labels(path).set(n)
    if hub.slow_closes > m.ws_slow_reported:
        m.ws_slow_consumer_closes.inc(hub.slow_closes - m.ws_slow_reported)
        m.ws_slow_reported = hub.slow_closes
    m.role.labels(str(system.settings.role)).set(1)
    m.wakeups.labels("sent").set(system.wakeups.sent)
    m.wakeups.labels("received").set(system.wakeups.received)
    now = trio.current_time()
    for name, breaker in system.routing.breakers.items():
        state = breaker.state(now)
        for s in ("closed", "open", "half_open"):
            m.connector_state.labels(name, s).set(1 if s == state else 0)
    body = generate_latest(m.registry) + generate_latest(event_metrics.REGISTRY)
    # Per-process counters: the pid lets a scraper of `--workers N` tell the processes apart.
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Paycast-Pid": str(os.getpid())})


_TRIO_DIR = os.path.dirname(trio.__file__) + os.sep


def _waiting_at(task: trio.lowlevel.Task) -> str:
    """Where ``task`` is suspended: ``file:line in function`` of the innermost frame of its
    coroutine chain outside trio, and the trio call it awaits.

    How: follow ``cr_await`` (coroutines) and ``ag_await`` (async generators) from the task's
    coroutine down; an object awaited through ``__await__`` (a ``coroutine_wrapper``, e.g.
    hypercorn's ``TCPServer``) hides its coroutine, found among its referents.
    """
    frames, awaited = [], task.coro
    while awaited is not None:
        if type(awaited).__name__ == "coroutine_wrapper":
            awaited = next((r for r in gc.get_referents(awaited) if hasattr(r, "cr_frame")), None)
            continue
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    ours = [f for f in frames if not f.f_code.co_filename.startswith(_TRIO_DIR)] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    path = frame.f_code.co_filename.rsplit("site-packages/", 1)[-1]
    inner = frames[frames.index(frame) + 1:]
    into = f" → trio {inner[0].f_code.co_name}" if inner else ""
    return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}{into}"


def _task_tree(task: trio.lowlevel.Task, where: bool = False) -> dict:
    children = [_task_tree(child, where) for nursery in task.child_nurseries for child in nursery.child_tasks]
    node = {"name": task.name, "children": sorted(children, key=lambda c: c["name"])}
    if where:
        node["waiting_at"] = _waiting_at(task)
    return node


def _as_text(node: dict, prefix: str = "", last: bool = True, root: bool = True) -> list[str]:
    label = node["name"] + (f"  @ {node['waiting_at']}" if "waiting_at" in node else "")
    lines = [label if root else f"{prefix}{'└── ' if last else '├── '}{label}"]
    child_prefix = "" if root else prefix + ("    " if last else "│   ")
    for i, child in enumerate(node["children"]):
        lines += _as_text(child, child_prefix, i == len(node["children"]) - 1, False)
    return lines


@bp.get("/debug/tasks")
@admin_required
async def debug_tasks():
    """The live trio task tree; ``?format=json`` for JSON (default text); ``?where=1`` adds
    where each task is suspended (the innermost frame of its coroutine chain)."""
    tree = _task_tree(trio.lowlevel.current_root_task(), where=request.args.get("where") == "1")
    if request.args.get("format") == "json" or "application/json" in request.headers.get("Accept", ""):
        return json_response(tree)
    return Response("\n".join(_as_text(tree)) + "\n", content_type="text/plain; charset=utf-8")


@bp.get("/debug/gc")
@admin_required
async def debug_gc():
    """The cycle collector's state: objects it tracks by generation, frozen
    (out of its sight), thresholds. ``?collect=0|1|2`` runs a collection of
    that generation and reports its pause (also observed in
    ``paycast_gc_pause_seconds``) and what it freed; ``?freeze=0`` thaws every
    frozen object first, ``?freeze=1`` freezes what survived; ``?garbage=1``
    summarises by type what the collection found unreachable. bench/gc_idle.py
    reads it."""
    out: dict = {}
    freeze = request.args.get("freeze")
    if freeze is not None:  # before any collection: 0 thaws, so that one can walk the frozen objects too
        if freeze not in ("0", "1"):
            raise InvalidRequest("freeze must be 0 or 1.")
        if freeze == "0":
            gc.unfreeze()
    generation = request.args.get("collect")
    if generation is not None:
        if generation not in ("0", "1", "2"):
            raise InvalidRequest("collect must be 0, 1 or 2.")
        keep = request.args.get("garbage") == "1"
        if keep:  # what the collection finds is kept in gc.garbage, summarised by type, then dropped
            flags = gc.get_debug()
            gc.set_debug(flags | gc.DEBUG_SAVEALL)
        started, cpu = time.perf_counter(), time.thread_time()
        out["collected"] = gc.collect(int(generation))
        out["pause_s"] = time.perf_counter() - started
        out["pause_cpu_s"] = time.thread_time() - cpu  # the pause's own CPU: what other load cannot inflate
        if keep:
            gc.set_debug(flags)
            by_type: dict[str, int] = {}
            for obj in gc.garbage:
                name = type(obj).__qualname__
                if name in ("function", "coroutine", "frame", "cell") and hasattr(obj, "__qualname__"):
                    name += ":" + obj.__qualname__
                elif name == "frame":
                    name += ":" + obj.f_code.co_qualname
                by_type[name] = by_type.get(name, 0) + 1
            gc.garbage.clear()
            out["garbage"] = dict(sorted(by_type.items(), key=lambda kv: -kv[1])[:60])
        out["generation"] = int(generation)
    if freeze == "1":  # after the collection: what survived it leaves the collector's sight
        gc.freeze()
    out.update(tracked=len(gc.get_objects()), by_generation=[len(gc.get_objects(g)) for g in range(3)],
               frozen=gc.get_freeze_count(), threshold=list(gc.get_threshold()), count=list(gc.get_count()))
    return json_response(out)


@bp.get("/openapi.json")
async def openapi_json():
    from app import console_openapi, openapi

    spec = current_app.config.get("OPENAPI")
    if spec is None:
        spec = current_app.config["OPENAPI"] = openapi.build(
            [*console_openapi.OPERATIONS, *current_app.config.get("EXTRA_OPS", [])])
    return json_response(spec)


@bp.get("/docs")
async def docs():
    from app.openapi import DOCS_HTML

    return Response(DOCS_HTML, content_type="text/html; charset=utf-8")
