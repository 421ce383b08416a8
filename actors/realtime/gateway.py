"""The realtime gateway: what the HTTP/WebSocket edge asks of realtime.

It owns the hub, the LISTEN feed, presence and a janitor, each a supervised
actor in its own nursery (``actor:hub``, ``actor:realtime-listener``,
``actor:realtime-heartbeat``, ``actor:realtime-presence``), and serves each WebSocket as a connection actor.
"""

from __future__ import annotations

import logging
import secrets
import time

import trio

from actors.realtime.connection import CLOSE_GOING_AWAY, Connection, Socket
from actors.realtime.feed import Feed
from actors.realtime.hub import Hub
from actors.realtime.presence import PresenceWriter
from actors.runtime import supervise
from domain.ids import new_id
from domain.realtime import Claims, client_topic, sign_token, verify_token
from storage import realtime as store

log = logging.getLogger("paycast.realtime")


class RealtimeGateway:
    """Args:
      settings: the process settings (``realtime_*``).
      db: the open database.
    """

    def __init__(self, settings, db) -> None:
        self.settings = settings
        self.db = db
        self.node_id = "node_" + secrets.token_hex(8)
        self.hub = Hub(db, settings)
        self.feed = Feed(db, self.hub, check_s=settings.realtime_listener_check_s,
                         timeout_s=settings.db_connect_timeout_s)
        self.presence_writer = PresenceWriter(db, self.node_id, settings.realtime_presence_ttl_s)
        self._secret: bytes | None = settings.realtime_secret.encode() if settings.realtime_secret else None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the gateway's actors until cancelled; ready once the listener has tried once."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervise, "hub", self.hub.run, name="actor:hub")
            nursery.start_soon(supervise, "realtime-heartbeat", self.hub.heartbeat, name="actor:realtime-heartbeat")
            nursery.start_soon(supervise, "realtime-presence", self.presence_writer.run,
                               name="actor:realtime-presence")
            await nursery.start(self.feed.run, name="actor:realtime-listener")
            task_status.started()

    # ------------------------------------------------------------ tokens

    async def _key(self) -> bytes:
        if self._secret is None:
            self._secret = (await self.db.transaction(store.token_secret)).encode()
        return self._secret

    async def issue_token(self, merchant_id: str, client_id: str, device_id: str | None,
                          ttl_s: int) -> tuple[str, int]:
        """A signed token for the client (and device), valid ``ttl_s`` seconds.

        Returns:
          ``(token, expires_at)`` with ``expires_at`` in unix seconds.
        """
        expires_at = int(time.time()) + ttl_s
        return sign_token(await self._key(), Claims(merchant_id, client_id, device_id, expires_at)), expires_at

    async def verify(self, token: str) -> Claims:
        """Raises: InvalidToken, TokenExpired, Unavailable (the key could not be loaded)."""
        return verify_token(await self._key(), token, time.time())

    # ------------------------------------------------------------ push and presence

    async def publish(self, merchant_id: str, client_id: str, device_id: str | None, topic: str | None,
                      event: dict) -> tuple[int, int]:
        """Store a message for the client; it is delivered once committed.

        Returns:
          ``(seq, connections that will receive it, in every process)``.
        """
        seq, remote = await self.db.transaction(
            store.publish, merchant_id, client_id, device_id, topic, event, self.node_id,
            self.settings.realtime_presence_ttl_s,
        )
        local = self.hub.count_receivers(merchant_id, client_id, device_id, topic or client_topic(client_id))
        return seq, local + remote

    async def presence(self, merchant_id: str, client_id: str) -> dict:
        """The client's devices and connection count across every process."""
        local = self.hub.local(merchant_id, client_id)
        remote = await self.db.transaction(store.remote_presence, merchant_id, client_id, self.node_id,
                                           self.settings.realtime_presence_ttl_s)
        devices = {c.device_id for c in local} | set(remote)
        return {"client_id": client_id, "devices": sorted(d for d in devices if d is not None),
                "connections": len(local) + len(remote)}

    def close_all(self, reason: str = "server shutting down") -> None:
        """Ask every connection to close (1001), e.g. when the server drains."""
        self.hub.close_all(CLOSE_GOING_AWAY, reason)

    # ------------------------------------------------------------ connections

    async def open(self, claims: Claims, after_seq: int | None) -> Connection:
        """Register a connection before the handshake completes.

        Live-only connections (no ``after_seq``) start from the client's latest
        seq, read *after* registering: whatever commits later is offered to the
        connection, whatever committed before is history (``after_seq`` gets it).

        Raises:
          Unavailable: the database cannot be read (the handshake is refused).
        """
        conn = Connection(new_id("conn"), claims, self.db, self.settings,
                          on_slow=self.hub.slow_consumer_closed)
        self.hub.add(conn)
        if after_seq is None:
            try:
                conn.cursor = await self.db.transaction(store.last_seq, claims.merchant_id, claims.client_id)
            except BaseException:
                self.hub.remove(conn)
                raise
        self.presence_writer.joined(conn.id, conn.merchant_id, conn.client_id, conn.device_id)
        return conn

    async def serve(self, conn: Connection, ws: Socket, after_seq: int | None) -> None:
        """Run the connection actor on the accepted socket until it closes; always unregisters."""
        try:
            await conn.run(ws, after_seq)
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            log.exception("realtime connection %s crashed", conn.id)
        finally:
            self.hub.remove(conn)
            self.presence_writer.left(conn.id)

    def forget(self, conn: Connection) -> None:
        """Undo :meth:`open` for a connection that never ran."""
        self.hub.remove(conn)
        self.presence_writer.left(conn.id)
