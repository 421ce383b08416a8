"""``actor:realtime-devices``: persists each device's ``acked_seq`` and
``last_seen_at`` in batches.

An ack costs a dict update here, never a database write: the writer flushes
whatever changed every ``flush_s`` (``PAYCAST_REALTIME_ACK_FLUSH_S``) in one statement, soon after a device
connects or leaves (so the device list and a reconnect see it), and once more
when the process stops. A crash loses at most the last second of acks, which
only means a client may be offered, by its own choice of ``after_seq``, a few
messages it had already seen — never a gap.
"""

from __future__ import annotations

import logging

import trio

from domain.errors import Unavailable
from storage import realtime as store

log = logging.getLogger("paycast.realtime")
# A connect or leave is flushed this soon, together with whatever else is pending.
SOON_S = 0.05
RETRY_S = 1.0

DeviceKey = tuple[str, str, str]  # merchant, client, device


class DeviceWriter:
    """Pending device rows of this process, flushed in batches."""

    def __init__(self, db, flush_s: float = 1.0) -> None:
        self._db = db
        self._flush_s = flush_s
        # key -> [highest acked seq, newest token issue time (ms) of its connections]
        self._pending: dict[DeviceKey, list[int]] = {}
        self._soon = trio.Event()
        self.flushes = 0

    def seen(self, key: DeviceKey, issued_at_ms: int, *, soon: bool = True) -> None:
        """A device connected or left: record the sighting (flushed shortly)."""
        self._note(key, 0, issued_at_ms)
        if soon:
            self._soon.set()

    def acked(self, key: DeviceKey, seq: int, issued_at_ms: int) -> None:
        """A device acknowledged up to ``seq`` (flushed with the next periodic batch)."""
        self._note(key, seq, issued_at_ms)

    def forget(self, key: DeviceKey) -> None:
        """The device was deleted: drop what is pending for it."""
        self._pending.pop(key, None)

    def _note(self, key: DeviceKey, seq: int, issued_at_ms: int) -> None:
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = [seq, issued_at_ms]
        else:
            entry[0] = max(entry[0], seq)
            entry[1] = max(entry[1], issued_at_ms)

    async def flush(self) -> None:
        """Write everything pending in one statement (put back if the database is down).

        Raises:
          Unavailable: the database could not be reached (nothing is lost).
        """
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        rows = [(m, c, d, seq, iat) for (m, c, d), (seq, iat) in batch.items()]
        try:
            await self._db.transaction(store.flush_devices, rows)
        except Unavailable:
            for key, (seq, iat) in batch.items():
                self._note(key, seq, iat)
            raise
        self.flushes += 1

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self._flush_s):
                    await self._soon.wait()
                    await trio.sleep(SOON_S)
                self._soon = trio.Event()
                try:
                    await self.flush()
                except Unavailable:
                    await trio.sleep(RETRY_S)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self.flush()
                except Exception as exc:  # noqa: BLE001 - stopping: at most the last second of acks is lost
                    log.warning("could not flush realtime device acks at shutdown: %s", exc)
