"""Process roles: which parts of Paycast one process runs.

``python run.py serve --role all|api|realtime|worker`` (or ``PAYCAST_ROLE``).
Any number of processes of any roles share one PostgreSQL (docs/api.md
"Processes and transport"). This table is the one place that says what each
role runs; the system starts actors and the HTTP edge registers routes by
asking :func:`parts_of`.

- ``api``: merchant HTTP, admin, gateway webhooks in, and what those need
  (payment and account actors, group-commit writers, the in-process gateway
  simulators).
- ``realtime``: the WebSocket gateway (``/v1/realtime``) and its actors.
- ``worker``: inbox processing, reconciliation, outgoing webhooks, partition
  maintenance, the console's rollups and the other janitors; it runs payment actors too, because
  webhook applies and reconciliation go through them.

Every role serves ``/healthz``, ``/readyz``, ``/metrics`` and ``/debug/tasks``.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ALL = "all"
    API = "api"
    REALTIME = "realtime"
    WORKER = "worker"


class Part(enum.StrEnum):
    """A piece of the system a role may run."""

    OPS = "ops"                    # /healthz, /readyz, /metrics, /debug/tasks, /openapi.json
    PAYMENTS = "payments"          # payment + account actors, unit writer, connectors and their simulator
    MERCHANT_HTTP = "merchant_http"  # /v1/* merchant routes, /admin, the dashboard
    WEBHOOKS_IN = "webhooks_in"    # /webhooks/<connector> and the inbox's group-commit writer
    REALTIME = "realtime"          # /v1/realtime WebSocket, hub, LISTEN feed, presence
    INBOX = "inbox"                # the inbox processor (applies stored gateway webhooks)
    RECONCILER = "reconciler"      # payments past their deadline; pending refunds and payouts
    WEBHOOKS_OUT = "webhooks_out"  # the outgoing webhook dispatcher
    MAINTENANCE = "maintenance"    # partitions ahead / retention, idempotency key purge
    ROLLUPS = "rollups"            # the console's rollups, folded from the event log


ROLE_PARTS: dict[Role, frozenset[Part]] = {
    Role.API: frozenset({Part.OPS, Part.PAYMENTS, Part.MERCHANT_HTTP, Part.WEBHOOKS_IN}),
    Role.REALTIME: frozenset({Part.OPS, Part.REALTIME}),
    Role.WORKER: frozenset({Part.OPS, Part.PAYMENTS, Part.INBOX, Part.RECONCILER, Part.WEBHOOKS_OUT,
                            Part.MAINTENANCE, Part.ROLLUPS}),
}
ROLE_PARTS[Role.ALL] = frozenset(Part)


def parts_of(role: Role | str) -> frozenset[Part]:
    """What a process of ``role`` runs.

    Raises:
      ValueError: not a role name.
    """
    return ROLE_PARTS[Role(role)]
