"""The realtime gateway: what the HTTP/WebSocket edge asks of realtime.

It owns the hub, the LISTEN feed, presence and a janitor, each a supervised
actor in its own nursery (``actor:hub``, ``actor:realtime-listener``,
``actor:realtime-heartbeat``, ``actor:realtime-resync``, ``actor:realtime-presence``,
``actor:realtime-devices``), and serves each WebSocket as a connection actor.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time

import trio

from actors.realtime.connection import CLOSE_GOING_AWAY, Connection, Socket
from actors.realtime.devices import DeviceWriter
from actors.realtime.feed import Feed
from actors.realtime.hub import Hub
from actors.realtime.presence import PresenceWriter
from actors.runtime import supervise
from domain.errors import TokenRevoked
from domain.ids import new_id
from domain.realtime import Claims, client_topic, revoked_token, sign_token, verify_token
from domain.realtime_delivery import CLOSE_DEVICE_REVOKED
from storage import realtime as store
from storage.secrets_box import SecretsBox

log = logging.getLogger("paycast.realtime")


class RealtimeGateway:
    """Args:
      settings: the process settings (``realtime_*``).
      db: the open database.
      box: seals and opens the realtime token key stored in the database.
    """

    def __init__(self, settings, db, box: SecretsBox) -> None:
        self.settings = settings
        self.db = db
        self._box = box
        self.node_id = "node_" + secrets.token_hex(8)
        self.feed = Feed(db, check_s=settings.realtime_listener_check_s, timeout_s=settings.db_connect_timeout_s)
        self.hub = Hub(db, settings, feed=self.feed, on_revoke=self._close_device)
        self.presence_writer = PresenceWriter(db, self.node_id, settings.realtime_presence_ttl_s)
        self.devices = DeviceWriter(db, settings.realtime_ack_flush_s)
        self._secret: bytes | None = settings.realtime_secret.encode() if settings.realtime_secret else None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the gateway's actors until cancelled; ready once the listener has tried once."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervise, "hub", self.hub.run, name="actor:hub")
            nursery.start_soon(supervise, "realtime-heartbeat", self.hub.heartbeat, name="actor:realtime-heartbeat")
            nursery.start_soon(supervise, "realtime-resync", self.hub.check_cursors, name="actor:realtime-resync")
            nursery.start_soon(supervise, "realtime-presence", self.presence_writer.run,
                               name="actor:realtime-presence")
            nursery.start_soon(supervise, "realtime-devices", self.devices.run, name="actor:realtime-devices")
            await nursery.start(self.feed.run, self.hub, name="actor:realtime-listener")
            task_status.started()

    # ------------------------------------------------------------ tokens

    async def _key(self) -> bytes:
        if self._secret is None:
            self._secret = (await self.db.transaction(store.token_secret, self._box)).encode()
        return self._secret

    async def issue_token(self, merchant_id: str, client_id: str, device_id: str | None,
                          ttl_s: int) -> tuple[str, int]:
        """A signed token for the client (and device), valid ``ttl_s`` seconds.

        Returns:
          ``(token, expires_at)`` with ``expires_at`` in unix seconds.
        """
        now = time.time()
        expires_at = int(now) + ttl_s
        claims = Claims(merchant_id, client_id, device_id, expires_at, int(now * 1000))
        return sign_token(await self._key(), claims), expires_at

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

    async def devices_of(self, merchant_id: str, client_id: str) -> list[dict]:
        """The client's devices (docs/api.md ``device`` objects), connections counted in every process."""
        stored = await self.db.transaction(store.list_devices, merchant_id, client_id, self.node_id,
                                           self.settings.realtime_presence_ttl_s)
        local: dict[str, int] = {}
        for conn in self.hub.local(merchant_id, client_id):
            if conn.device_id is not None:
                local[conn.device_id] = local.get(conn.device_id, 0) + 1
        by_id = {row["device_id"]: row for row in stored}
        for device_id in local.keys() - by_id.keys():  # connected here, not flushed yet
            by_id[device_id] = {"device_id": device_id, "acked_seq": 0, "last_seen_at": None, "remote": 0}
        now = dt.datetime.now(dt.timezone.utc)
        # A device connected to this process is seen now (its row is written in batches).
        return [{"object": "device", "device_id": device_id,
                 "connections": by_id[device_id]["remote"] + local.get(device_id, 0),
                 "last_seen_at": now if local.get(device_id) else by_id[device_id]["last_seen_at"],
                 "acked_seq": by_id[device_id]["acked_seq"]}
                for device_id in sorted(by_id)]

    async def delete_device(self, merchant_id: str, client_id: str, device_id: str) -> None:
        """Revoke a device: tokens issued for it until now are refused, its acks are
        forgotten, and its connections in every process are closed with 4001
        (here at once, elsewhere when the committed notification arrives).

        Raises:
          Unavailable: the database could not be written (nothing changed).
        """
        await self.db.transaction(store.revoke_device, merchant_id, client_id, device_id, int(time.time() * 1000))
        self._close_device(merchant_id, client_id, device_id)

    def _close_device(self, merchant_id: str, client_id: str, device_id: str) -> None:
        self.devices.forget((merchant_id, client_id, device_id))
        for conn in self.hub.local(merchant_id, client_id):
            if conn.device_id == device_id:
                conn.request_close(CLOSE_DEVICE_REVOKED, "device deleted")

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
        device = (claims.merchant_id, claims.client_id, claims.device_id) if claims.device_id else None
        on_ack = (lambda seq: self.devices.acked(device, seq, claims.issued_at_ms)) if device else None
        conn = Connection(new_id("conn"), claims, self.db, self.settings,
                          on_slow=self.hub.slow_consumer_closed, on_ack=on_ack)
        # Registered before the read: a device deleted meanwhile is either seen
        # deleted by the read, or its notification finds this connection.
        self.hub.add(conn)
        if after_seq is None or device is not None:
            try:
                latest, not_before_ms = await self.db.transaction(store.handshake, claims.merchant_id,
                                                                  claims.client_id, claims.device_id)
                if revoked_token(claims, not_before_ms):
                    raise TokenRevoked("This device was deleted; ask your backend for a new token.")
            except BaseException:
                self.hub.remove(conn)
                raise
            if after_seq is None:
                conn.delivery.start(None, latest)
        self.presence_writer.joined(conn.id, conn.merchant_id, conn.client_id, conn.device_id)
        if device is not None:
            self.devices.seen(device, claims.issued_at_ms)
        return conn

    async def serve(self, conn: Connection, ws: Socket, after_seq: int | None) -> None:
        """Run the connection actor on the accepted socket until it closes; always unregisters."""
        fast = bool(getattr(ws, "fast", False))
        self.hub.sockets["fast" if fast else "fallback"] += 1
        if not fast and self.hub.sockets["fallback"] == 1:
            log.warning("realtime sockets use the slow ASGI path: hypercorn's internals are not as expected")
        try:
            await conn.run(ws, after_seq)
        except Exception:  # noqa: BLE001 - one connection's bug must not take the server down
            log.exception("realtime connection %s crashed", conn.id)
        finally:
            self.hub.remove(conn)
            self.presence_writer.left(conn.id)
            revoked = conn.closing is not None and conn.closing[0] == CLOSE_DEVICE_REVOKED
            if conn.device_id is not None and not revoked:  # a deleted device's sighting is not recorded
                self.devices.seen((conn.merchant_id, conn.client_id, conn.device_id), conn.issued_at_ms)

    def forget(self, conn: Connection) -> None:
        """Undo :meth:`open` for a connection that never ran."""
        self.hub.remove(conn)
        self.presence_writer.left(conn.id)
