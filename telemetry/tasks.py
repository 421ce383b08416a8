"""``PAYCAST_TRACE_TASKS=1``: log every task spawn and exit (a trio Instrument)."""

from __future__ import annotations

import logging

import trio

log = logging.getLogger("paycast.tasks")


class TaskTracer(trio.abc.Instrument):
    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        parent = task.parent_nursery.parent_task.name if task.parent_nursery else None
        log.info("task spawned: %s (parent %s)", task.name, parent)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        log.info("task exited: %s", task.name)
