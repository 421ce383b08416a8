"""The realtime message log: per-client gap-free ``seq``, presence rows, the
shared token secret, and topic ownership.

Messages of events are written by :data:`EVENTS_PROJECTION`, which the
running system gives the database as a projection of the event log
(components/__init__.py ``COMMITS``, :class:`storage.database.Commits`): CTEs of the very
statement that appends the events they carry. After
commit, the channel :data:`CHANNEL` is notified (batched across transactions,
:mod:`storage.after_commit`), which is how an event committed by one process
reaches WebSockets held by another; receivers cover a lost notification by
reading the database.
"""

from __future__ import annotations

import functools
import secrets as _secrets
from collections.abc import Iterable

import asyncpg

from domain.realtime import Message, client_topic, encode_notice, encode_revoke, event_frame, topic_of
from domain.render import iso
from storage import after_commit
from storage import events as event_log
from storage.secrets_box import SecretsBox, context_of, is_sealed
from telemetry import tracing

CHANNEL = "paycast_realtime"
_SECRET_NAME = "realtime_token_key"


async def append_messages(conn: asyncpg.Connection, merchant_id: str, client_id: str,
                          items: list[tuple[str, str | None, object]]) -> list[Message]:
    """Append messages to one client's log with its next seqs and notify listeners.

    Call inside a transaction: the client's row stays locked until commit, so
    writers for one client commit in seq order; listeners are notified after
    commit.

    Args:
      items: ``(topic, device_id, payload)`` in order; payload is the ``event``
        object of the frame.

    Returns:
      The stored messages (seq, topic, device, rendered frame).
    """
    last = await conn.fetchval(
        "INSERT INTO realtime_clients AS c (merchant_id, client_id, last_seq) VALUES ($1, $2, $3)"
        " ON CONFLICT (merchant_id, client_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq"
        " RETURNING last_seq",
        merchant_id, client_id, len(items),
    )
    first = last - len(items) + 1
    seqs = list(range(first, last + 1))
    messages = [Message(seq, topic, device, event_frame(seq, topic, payload))
                for seq, (topic, device, payload) in zip(seqs, items)]
    await conn.execute(
        "INSERT INTO realtime_messages (merchant_id, client_id, seq, topic, device_id, payload)"
        " SELECT $1::text, $2::text, * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[])",
        merchant_id, client_id, seqs, [t for t, _, _ in items], [d for _, d, _ in items], [p for _, _, p in items],
    )
    # The unit of work's trace (current here): the push to WebSockets joins it.
    await _notify(conn, merchant_id, client_id, messages, tracing.current_traceparent())
    return messages


class EventsProjection:
    """Each event of a customer's payment, order, account, refund or dispute
    becomes a message of the client whose id is that ``customer_id``: CTEs of
    the statement that appends the events (:class:`storage.events.Append`).

    ``rt_clients`` bumps each concerned client's ``last_seq`` by its number of
    messages (row-locking it until commit, so one client's writers commit in
    seq order) and ``rt_messages`` inserts the messages numbered from it; the
    payload is the event's API form, built from what ``ev`` returned. Both
    read ``ev``, so nothing is written when the append's guard failed, and the
    client rows are locked after the merchant's seq row, as everywhere.
    """

    def plan(self, append: event_log.Append) -> event_log.Planned | None:
        # Per message: its client, its position among that client's messages
        # counted from the last (seq = the client's new last_seq - back), its
        # event and its topic.
        by_client: dict[str, list[tuple[str, str]]] = {}
        for event_id, event in zip(append.ids, append.events):
            topic = topic_of(event.type, event.object_id) if event.customer_id else None
            if topic is not None:
                by_client.setdefault(event.customer_id, []).append((event_id, topic))
        if not by_client:
            return None
        clients, counts, m_clients, m_back, m_events, m_topics = [], [], [], [], [], []
        for client_id, items in by_client.items():
            clients.append(client_id)
            counts.append(len(items))
            for k, (event_id, topic) in enumerate(items):
                m_clients.append(client_id)
                m_back.append(len(items) - 1 - k)
                m_events.append(event_id)
                m_topics.append(topic)
        sql = (
            "-- each concerned client's last seq, bumped by its number of messages (locked until commit)\n"
            "rt_clients AS (\n"
            "  INSERT INTO realtime_clients AS c (merchant_id, client_id, last_seq)\n"
            "  SELECT $rt_merchant::text, u.client_id, u.n\n"
            "  FROM unnest($rt_clients::text[], $rt_counts::int[]) AS u(client_id, n)\n"
            "  WHERE EXISTS (SELECT 1 FROM ev)\n"
            "  ON CONFLICT (merchant_id, client_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq\n"
            "  RETURNING client_id, last_seq),\n"
            "-- one message per event of a customer, numbered back from the client's new last seq\n"
            "rt_messages AS (\n"
            "  INSERT INTO realtime_messages (merchant_id, client_id, seq, topic, payload)\n"
            "  SELECT $rt_merchant::text, x.client_id, rt_clients.last_seq - x.back, x.topic,\n"
            "    jsonb_build_object('id', ev.id, 'object', 'event', 'type', ev.type, 'seq', ev.seq,\n"
            "      'created_at', $rt_created::text, 'data', jsonb_build_object('object', ev.data))\n"
            "  FROM unnest($rt_message_clients::text[], $rt_message_back::int[], $rt_message_events::text[],\n"
            "    $rt_message_topics::text[]) AS x(client_id, back, event_id, topic)\n"
            "  JOIN rt_clients ON rt_clients.client_id = x.client_id JOIN ev ON ev.id = x.event_id)"
        )
        args = {"rt_merchant": append.merchant_id, "rt_clients": clients, "rt_counts": counts,
                "rt_message_clients": m_clients, "rt_message_back": m_back, "rt_message_events": m_events,
                "rt_message_topics": m_topics, "rt_created": iso(append.now)}
        # The unit of work's trace (current here): the push to WebSockets joins it.
        # A partial of plain data, not a closure over ``append``: that would make
        # append → planned → closure → append a reference cycle, garbage for
        # the cycle collector on every event-appending statement.
        committed = functools.partial(_notify_committed, append.merchant_id, append.ids, by_client,
                                      tracing.current_traceparent())
        return event_log.Planned(sql, args, "(SELECT jsonb_object_agg(client_id, last_seq) FROM rt_clients)",
                                 committed)


async def _notify_committed(merchant_id: str, event_ids: list[str], by_client: dict[str, list[tuple[str, str]]],
                            traceparent: str | None, conn: asyncpg.Connection, last_seqs: dict | None,
                            rendered: list[dict]) -> None:
    """After the statement: each client's new messages, rendered, to its listeners (after commit)."""
    if not last_seqs:
        return
    forms = dict(zip(event_ids, rendered))
    for client_id, items in by_client.items():
        first = last_seqs[client_id] - len(items) + 1
        messages = [Message(first + k, topic, None, event_frame(first + k, topic, forms[event_id]))
                    for k, (event_id, topic) in enumerate(items)]
        await _notify(conn, merchant_id, client_id, messages, traceparent)


async def _notify(conn: asyncpg.Connection, merchant_id: str, client_id: str, messages: list[Message],
                  traceparent: str | None) -> None:
    # Sent after commit, batched with other transactions' (storage.after_commit):
    # a NOTIFY inside this transaction would serialise its commit with every
    # other notifying transaction in the database.
    await after_commit.notify(conn, CHANNEL, encode_notice(merchant_id, client_id, messages, traceparent))


EVENTS_PROJECTION = EventsProjection()


async def publish(conn: asyncpg.Connection, merchant_id: str, client_id: str, device_id: str | None,
                  topic: str | None, event: dict, node_id: str, presence_ttl_s: float) -> tuple[int, int]:
    """Store a published message as the client's next seq.

    Returns:
      ``(seq, connections held by other processes that will receive it)``.
    """
    (message,) = await append_messages(conn, merchant_id, client_id,
                                       [(topic or client_topic(client_id), device_id, event)])
    remote = await conn.fetchval(
        "SELECT count(*) FROM realtime_presence WHERE merchant_id = $1 AND client_id = $2 AND node_id <> $3"
        " AND seen_at > now() - make_interval(secs => $4) AND ($5::text IS NULL OR device_id = $5)",
        merchant_id, client_id, node_id, presence_ttl_s, device_id,
    )
    return message.seq, remote


def _message(row) -> Message:
    return Message(row["seq"], row["topic"], row["device_id"], event_frame(row["seq"], row["topic"], row["payload"]))


async def read_after(conn: asyncpg.Connection, merchant_id: str, client_id: str, after_seq: int,
                     limit: int) -> list[Message]:
    """Up to ``limit`` messages of a client with ``seq > after_seq``, oldest first."""
    rows = await conn.fetch(
        "SELECT seq, topic, device_id, payload FROM realtime_messages"
        " WHERE merchant_id = $1 AND client_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        merchant_id, client_id, after_seq, limit,
    )
    return [_message(r) for r in rows]


async def read_ranges(conn: asyncpg.Connection,
                      ranges: list[tuple[str, str, int, int]]) -> dict[tuple[str, str], list[Message]]:
    """The messages of several ``(merchant_id, client_id, first, last)`` ranges in one query."""
    rows = await conn.fetch(
        "SELECT m.merchant_id, m.client_id, m.seq, m.topic, m.device_id, m.payload"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS r(merchant_id, client_id, f, l)"
        " JOIN realtime_messages m ON m.merchant_id = r.merchant_id AND m.client_id = r.client_id"
        " AND m.seq BETWEEN r.f AND r.l ORDER BY m.merchant_id, m.client_id, m.seq",
        [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges], [r[3] for r in ranges],
    )
    out: dict[tuple[str, str], list[Message]] = {}
    for row in rows:
        out.setdefault((row["merchant_id"], row["client_id"]), []).append(_message(row))
    return out


async def last_seq(conn: asyncpg.Connection, merchant_id: str, client_id: str) -> int:
    """The client's latest seq (0 before its first message)."""
    value = await conn.fetchval(
        "SELECT last_seq FROM realtime_clients WHERE merchant_id = $1 AND client_id = $2", merchant_id, client_id
    )
    return value or 0


async def last_seqs(conn: asyncpg.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Latest seq of many clients at once (clients without messages are left out)."""
    keys = list(keys)
    rows = await conn.fetch(
        "SELECT c.merchant_id, c.client_id, c.last_seq FROM realtime_clients c"
        " JOIN unnest($1::text[], $2::text[]) AS k(merchant_id, client_id)"
        " ON c.merchant_id = k.merchant_id AND c.client_id = k.client_id",
        [k[0] for k in keys], [k[1] for k in keys],
    )
    return {(r["merchant_id"], r["client_id"]): r["last_seq"] for r in rows}


async def owns_topic(conn: asyncpg.Connection, merchant_id: str, client_id: str, topic: str) -> bool:
    """Whether ``topic`` (``payment:<id>``/``order:<id>``) is the client's own.

    A payment is the client's when its customer is, or its order's customer is;
    an order when its customer is, or one of its payments' customer is.
    """
    kind, _, object_id = topic.partition(":")
    if kind == "payment":
        sql = ("SELECT EXISTS (SELECT 1 FROM payments p LEFT JOIN orders o ON o.id = p.order_id"
               " WHERE p.id = $1 AND p.merchant_id = $2 AND (p.customer_id = $3 OR o.customer_id = $3))")
    elif kind == "order":
        sql = ("SELECT EXISTS (SELECT 1 FROM orders o WHERE o.id = $1 AND o.merchant_id = $2"
               " AND (o.customer_id = $3 OR EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id"
               " AND p.customer_id = $3)))")
    else:
        return False
    return bool(await conn.fetchval(sql, object_id, merchant_id, client_id))


async def token_secret(conn: asyncpg.Connection, box: SecretsBox) -> str:
    """The deployment's realtime token key, created by whichever process asks first.

    Stored sealed (:mod:`storage.secrets_box`), like every other secret at rest:
    anyone reading the table (a backup, a replica, ``psql``) could otherwise mint
    tokens for any merchant's clients. A key stored in plaintext by an older
    version is sealed at start (:func:`storage.secrets_box.prepare`); read before
    that, it is used as it is.
    """
    context = context_of("paycast_secrets", "value", _SECRET_NAME)
    await conn.execute(
        "INSERT INTO paycast_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        _SECRET_NAME, box.seal(_secrets.token_urlsafe(48), context),
    )
    stored = await conn.fetchval("SELECT value FROM paycast_secrets WHERE name = $1", _SECRET_NAME)
    return box.open(stored, context) if is_sealed(stored) else stored


# --------------------------------------------------------------------------- presence


async def sync_presence(conn: asyncpg.Connection, node_id: str, joined: list[tuple[str, str, str, str | None]],
                        left: list[str], refresh: bool, ttl_s: float) -> None:
    """Write this process's presence changes in one transaction.

    Args:
      joined: ``(connection_id, merchant_id, client_id, device_id)`` of new connections.
      left: connection ids that closed.
      refresh: also mark every row of this node as seen now, and drop rows of
        any node not seen for ``ttl_s`` (a process that died).
    """
    if left:
        await conn.execute("DELETE FROM realtime_presence WHERE connection_id = ANY($1::text[])", left)
    if joined:
        await conn.execute(
            "INSERT INTO realtime_presence (connection_id, node_id, merchant_id, client_id, device_id)"
            " SELECT c, $1::text, m, cl, d FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS j(c, m, cl, d)"
            " ON CONFLICT (connection_id) DO NOTHING",
            node_id, [j[0] for j in joined], [j[1] for j in joined], [j[2] for j in joined],
            [j[3] for j in joined],
        )
    if refresh:
        await conn.execute("UPDATE realtime_presence SET seen_at = now() WHERE node_id = $1", node_id)
        await conn.execute("DELETE FROM realtime_presence WHERE seen_at < now() - make_interval(secs => $1)", ttl_s)


async def clear_presence(conn: asyncpg.Connection, node_id: str) -> None:
    """Forget every connection of this process (clean shutdown)."""
    await conn.execute("DELETE FROM realtime_presence WHERE node_id = $1", node_id)


async def remote_presence(conn: asyncpg.Connection, merchant_id: str, client_id: str, node_id: str,
                          ttl_s: float) -> list[str | None]:
    """Device ids (None for device-less) of the client's connections held by other processes."""
    rows = await conn.fetch(
        "SELECT device_id FROM realtime_presence WHERE merchant_id = $1 AND client_id = $2 AND node_id <> $3"
        " AND seen_at > now() - make_interval(secs => $4)",
        merchant_id, client_id, node_id, ttl_s,
    )
    return [r["device_id"] for r in rows]



# --------------------------------------------------------------------------- devices


async def handshake(conn: asyncpg.Connection, merchant_id: str, client_id: str,
                    device_id: str | None) -> tuple[int, int | None]:
    """What a connecting client needs, in one round trip.

    Returns:
      ``(the client's latest seq, the device's not-before in unix ms or None)``.
    """
    row = await conn.fetchrow(
        "SELECT (SELECT last_seq FROM realtime_clients WHERE merchant_id = $1 AND client_id = $2) AS last_seq,"
        " (SELECT not_before_ms FROM realtime_devices WHERE merchant_id = $1 AND client_id = $2"
        " AND device_id = $3) AS not_before_ms",
        merchant_id, client_id, device_id,
    )
    return row["last_seq"] or 0, row["not_before_ms"]


async def flush_devices(conn: asyncpg.Connection, rows: list[tuple[str, str, str, int, int]]) -> None:
    """Record acks and sightings of devices in one statement.

    Args:
      rows: ``(merchant_id, client_id, device_id, acked_seq, token_issued_at_ms)``,
        one per device. ``acked_seq`` only ever raises the stored value; a row
        from a connection whose token predates the device's deletion is ignored
        (its acks belong to the device that was deleted).
    """
    if not rows:
        return
    await conn.execute(
        "INSERT INTO realtime_devices AS d (merchant_id, client_id, device_id, acked_seq, last_seen_at)"
        " SELECT u.m, u.c, u.d, u.a, now()"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS u(m, c, d, a, iat)"
        " WHERE NOT EXISTS (SELECT 1 FROM realtime_devices r WHERE r.merchant_id = u.m AND r.client_id = u.c"
        " AND r.device_id = u.d AND r.not_before_ms > u.iat)"
        " ON CONFLICT (merchant_id, client_id, device_id) DO UPDATE"
        " SET acked_seq = GREATEST(d.acked_seq, EXCLUDED.acked_seq), last_seen_at = now()",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        [r[4] for r in rows],
    )


async def revoke_device(conn: asyncpg.Connection, merchant_id: str, client_id: str, device_id: str,
                        not_before_ms: int) -> None:
    """Forget a device (its acks) and refuse its tokens issued before ``not_before_ms``;
    every process is told on commit to close the device's connections."""
    await conn.execute(
        "INSERT INTO realtime_devices AS d (merchant_id, client_id, device_id, acked_seq, last_seen_at, not_before_ms)"
        " VALUES ($1, $2, $3, 0, NULL, $4) ON CONFLICT (merchant_id, client_id, device_id) DO UPDATE"
        " SET acked_seq = 0, last_seen_at = NULL, not_before_ms = GREATEST(d.not_before_ms, EXCLUDED.not_before_ms)",
        merchant_id, client_id, device_id, not_before_ms,
    )
    await after_commit.notify(conn, CHANNEL, encode_revoke(merchant_id, client_id, device_id))


async def list_devices(conn: asyncpg.Connection, merchant_id: str, client_id: str, node_id: str,
                       ttl_s: float) -> list[dict]:
    """The client's devices: stored ones seen since their last deletion, and any
    connected through another process, with that process's connection counts.

    Returns:
      ``{"device_id", "acked_seq", "last_seen_at", "remote"}`` per device.
    """
    rows = await conn.fetch(
        "WITH remote AS (SELECT device_id, count(*) AS n, max(seen_at) AS seen FROM realtime_presence"
        " WHERE merchant_id = $1 AND client_id = $2 AND node_id <> $3 AND device_id IS NOT NULL"
        " AND seen_at > now() - make_interval(secs => $4) GROUP BY device_id),"
        " stored AS (SELECT device_id, acked_seq, last_seen_at FROM realtime_devices"
        " WHERE merchant_id = $1 AND client_id = $2)"
        " SELECT COALESCE(s.device_id, r.device_id) AS device_id, COALESCE(s.acked_seq, 0) AS acked_seq,"
        " GREATEST(s.last_seen_at, r.seen) AS last_seen_at, COALESCE(r.n, 0) AS remote"
        " FROM stored s FULL JOIN remote r ON r.device_id = s.device_id"
        " WHERE s.last_seen_at IS NOT NULL OR r.n IS NOT NULL ORDER BY 1",
        merchant_id, client_id, node_id, ttl_s,
    )
    return [dict(r) for r in rows]
