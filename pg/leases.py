"""Who uses an embedded server: one lease file per process, and "the last one out stops it".

A lease is a file in ``data_dir / "pg.users"`` on which its process holds a
shared ``flock``. The kernel drops the lock when the process dies in any way
(``kill -9`` included), so a lease file nobody holds locked belongs to a dead
process and does not count. :class:`pg.cluster.EmbeddedPostgres` takes and
releases leases under its data directory's lock (``acquire``, ``_release``),
so a last user stopping the server never races a new user starting to rely on it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the cluster imports this module; the type only names it
    from pg.cluster import EmbeddedPostgres

__all__ = ["Lease", "live_users", "register"]

_logger = logging.getLogger(__name__)


class Lease:
    """One process's registration as a user of an embedded server (see :meth:`EmbeddedPostgres.acquire`)."""

    def __init__(self, pg: "EmbeddedPostgres", path: pathlib.Path, fd: int) -> None:
        self._pg = pg
        self._path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether the lease is still registered."""
        return self._fd is not None

    def release(self) -> bool:
        """Unregister; when no other live process holds a lease, stop the server.

        Idempotent.

        Returns:
            True if this call stopped the server.

        Raises:
            EmbeddedPostgresError: If the server had to be stopped and could not be.
        """
        if self._fd is None:
            return False
        return self._pg._release(self)

    def _drop(self) -> None:
        if self._fd is None:
            return
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def live_users(users: pathlib.Path) -> int:
    """How many processes hold a lease in ``users`` (stale leases are removed).

    Returns:
        The number of live leases, this process's own included.
    """
    alive = 0
    for path in sorted(users.glob("*.lease")) if users.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            alive += 1  # its owner holds it: a live user
        else:
            _logger.info("removing stale lease %s", path.name)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return alive


def register(users: pathlib.Path, pg: "EmbeddedPostgres") -> Lease:
    """Take a new lease for this process in ``users`` (created if missing)."""
    users.mkdir(exist_ok=True)
    path = users / f"{os.getpid()}-{os.urandom(4).hex()}.lease"
    # O_CLOEXEC: the postmaster we may start must not inherit the lease,
    # or the server would count itself as one of its users for ever.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return Lease(pg, path, fd)
