"""The Paycast processes a chaos run drives: one topology on one data directory.

A topology (``--topology``) is a set of named ``run.py serve`` processes on
one embedded PostgreSQL (one data directory), each on a fixed port so that a
restarted process is found again at the same address:

- ``single``: one process (``server``), every role;
- ``workers:N``: one ``run.py serve --workers N`` (``server``): a parent and N
  worker children on one port (``SO_REUSEPORT``); the parent restarts a child
  that dies;
- ``roles``: ``api``, ``worker``, ``realtime-1`` and ``realtime-2`` (one
  process per role, two realtime ones); the simulators' webhooks go to the api
  process (``PAYCAST_SIM_WEBHOOK_URL``).

The environment of every process is the caller's, with the chaos settings and
what the topology needs on top; :func:`overridden` names the caller's
``PAYCAST_*`` variables that the run replaces (printed, never silent).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "adm_chaos"

# The chaos run's own settings: fast deadlines, flaky connectors, short retry schedules.
CHAOS_ENV = {
    "PAYCAST_FLAKY_ERROR_RATE": "0.4", "PAYCAST_PROCESSING_DEADLINE_S": "1", "PAYCAST_RECONCILE_INTERVAL_S": "0.2",
    "PAYCAST_RECONCILE_MAX_CHECKS": "4", "PAYCAST_SIM_DUPLICATE_RATE": "0.1", "PAYCAST_SIM_REORDER": "true",
    "PAYCAST_SIM_DELAY_MS": "20", "PAYCAST_INBOX_RETRY_SCHEDULE": "1,1,2", "PAYCAST_LOG_LEVEL": "WARNING",
    "PAYCAST_DB_CONNECT_TIMEOUT_S": "1", "PAYCAST_BREAKER_FAILURE_THRESHOLD": "1.0",
    # The run's outgoing-webhook receiver listens on loopback; retries come quickly.
    "PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS": "true", "PAYCAST_WEBHOOK_RETRY_SCHEDULE": "1,1,2,4",
}
# Owned by the run whatever the caller set: the data directory and its embedded
# PostgreSQL (the run kills it), ports, roles and process counts.
OWNED = ("PAYCAST_DATABASE_URL", "PAYCAST_DATA_DIR", "PAYCAST_PORT", "PAYCAST_ADMIN_TOKEN", "PAYCAST_WORKERS",
         "PAYCAST_ROLE", "PAYCAST_REUSE_PORT", "PAYCAST_SIM_WEBHOOK_URL", "PAYCAST_WORKER_INDEX")


class TopologyError(ValueError):
    """Not a topology name."""


@dataclass(frozen=True)
class Topology:
    """What processes a run starts.

    Attributes:
      name: as given (``single``, ``workers:N``, ``roles``).
      workers: worker children of the one server (``workers:N``), else 0.
      roles: one process per role (``roles``).
    """

    name: str
    workers: int = 0
    roles: bool = False

    @classmethod
    def parse(cls, text: str) -> "Topology":
        """``single`` | ``workers:N`` (N ≥ 2) | ``roles``.

        Raises:
          TopologyError: anything else.
        """
        if text == "single":
            return cls("single")
        if text == "roles":
            return cls("roles", roles=True)
        prefix, _, count = text.partition(":")
        if prefix == "workers" and count.isdigit() and int(count) >= 2:
            return cls(text, workers=int(count))
        raise TopologyError(f"unknown topology {text!r}: single, workers:N (N >= 2) or roles")

    def process_names(self) -> tuple[str, ...]:
        return ("api", "worker", "realtime-1", "realtime-2") if self.roles else ("server",)


def overridden(environ: dict[str, str]) -> list[str]:
    """The caller's ``PAYCAST_*`` variables the run replaces (its own settings or the topology's)."""
    return sorted(k for k in environ if k in OWNED or k in CHAOS_ENV)


# Every server is started from this one thread, which lives as long as the run: a
# server gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), so a
# run that is killed (a CI timeout) does not leave its servers behind, and a restart
# made from one of trio's short-lived worker threads is not stopped when that thread is.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-spawner")


def _spawn(args: list[str], env: dict[str, str], stderr) -> subprocess.Popen:
    from processes.workers import die_with_parent

    return _SPAWNER.submit(subprocess.Popen, args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr,
                           text=True, preexec_fn=die_with_parent).result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    """One ``run.py serve`` (maybe a ``--workers`` parent) on a fixed port.

    Attributes:
      name: its name in the topology (``server``, ``api``, ``worker``, ``realtime-1``, ...).
      env: its environment on top of the common one.
      args: ``serve`` and its flags.
    """

    name: str
    port: int
    data_dir: pathlib.Path
    env: dict[str, str]
    args: tuple[str, ...] = ("serve",)
    proc: subprocess.Popen | None = None
    starts: int = 0
    listening: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        """Spawn it and wait (bounded) for its ``listening`` line.

        Raises:
          RuntimeError: it exited or did not listen in time.
        """
        self.starts += 1
        self.listening = {}
        log = open(self.data_dir / f"{self.name}-{self.starts}.log", "w")  # noqa: SIM115 - the child owns it
        self.proc = _spawn([sys.executable, str(ROOT / "run.py"), *self.args], self.env, log)
        log.close()
        found = threading.Event()
        proc = self.proc

        def read() -> None:  # a daemon thread: the pipe is drained for the process's whole life
            assert proc.stdout is not None
            for line in proc.stdout:
                if not found.is_set() and line.startswith("{") and '"listening"' in line:
                    self.listening = json.loads(line)
                    found.set()
            found.set()  # it exited

        threading.Thread(target=read, name=f"chaos-{self.name}-stdout", daemon=True).start()
        if not found.wait(timeout) or not self.listening:
            self.kill9()
            raise RuntimeError(f"{self.name} did not start (see {self.data_dir}/{self.name}-{self.starts}.log)")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """Its child processes' pids (the workers of a ``--workers`` parent), from /proc."""
        if not self.alive():
            return []
        assert self.proc is not None
        path = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def kill9(self) -> None:
        """SIGKILL it and its children (a ``--workers`` parent's would only get SIGTERM from the kernel)."""
        if not self.alive():
            return
        assert self.proc is not None
        children = self.children()
        self.proc.send_signal(signal.SIGKILL)
        for pid in children:
            _signal(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


class Cluster:
    """The processes of one topology on one data directory.

    Args:
      topology: what to start.
      data_dir: the shared data directory (its embedded PostgreSQL).
      environ: the caller's environment (its ``PAYCAST_*`` variables pass through,
        except the ones :func:`overridden` names).
    """

    def __init__(self, topology: Topology, data_dir: pathlib.Path, environ: dict[str, str]) -> None:
        self.topology = topology
        self.data_dir = data_dir
        base = {k: v for k, v in environ.items() if k not in OWNED}
        base.update(CHAOS_ENV, PAYCAST_DATA_DIR=str(data_dir), PAYCAST_ADMIN_TOKEN=ADMIN_TOKEN)
        self.processes: dict[str, Process] = {}
        if topology.roles:
            api_port = free_port()
            for name in topology.process_names():
                port = api_port if name == "api" else free_port()
                env = dict(base, PAYCAST_PORT=str(port), PAYCAST_ROLE=name.split("-")[0],
                           PAYCAST_SIM_WEBHOOK_URL=f"http://127.0.0.1:{api_port}")
                self.processes[name] = Process(name, port, data_dir, env)
        else:
            port = free_port()
            args = ("serve", "--workers", str(topology.workers)) if topology.workers else ("serve",)
            self.processes["server"] = Process("server", port, data_dir, dict(base, PAYCAST_PORT=str(port)), args)

    @property
    def api(self) -> Process:
        """The process merchants and gateways talk to."""
        return self.processes["api" if self.topology.roles else "server"]

    def realtime(self) -> list[Process]:
        """The processes realtime clients connect to, spread over in order."""
        if self.topology.roles:
            return [self.processes["realtime-1"], self.processes["realtime-2"]]
        return [self.api]

    def standin(self, name: str) -> Process:
        """Another process like ``name`` (its role and environment) on a port of its own, not started."""
        like = self.processes[name]
        port = free_port()
        return Process(f"{name}-standin", port, self.data_dir, dict(like.env, PAYCAST_PORT=str(port)), like.args)

    def start(self) -> None:
        for process in self.processes.values():
            process.start()

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop()

    def worker_children(self) -> list[int]:
        """The ``--workers`` parent's children (``workers:N``), in pid order."""
        return sorted(self.api.children()) if self.topology.workers else []

    def crash_postgres(self) -> int:
        """SIGKILL the postmaster; returns its pid."""
        pid = int((self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        return pid

    def one_shot(self, *args: str) -> subprocess.CompletedProcess:
        """``run.py ARGS`` beside the live processes (e.g. ``check``)."""
        env = dict(self.api.env)
        env.pop("PAYCAST_ROLE", None)
        return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)


def pause(pid: int) -> bool:
    """SIGSTOP ``pid``; False if it is gone."""
    return _signal(pid, signal.SIGSTOP)


def resume(pid: int) -> bool:
    """SIGCONT ``pid``; False if it is gone."""
    return _signal(pid, signal.SIGCONT)


def kill9(pid: int) -> bool:
    """SIGKILL ``pid``; False if it is gone."""
    return _signal(pid, signal.SIGKILL)


class Receiver:
    """The run's outgoing-webhook endpoint: a threaded loopback HTTP server that answers 200
    (after ``delay_s``: a slow endpoint keeps delivery leases held) and keeps each delivery's
    ``webhook-id``. A sender killed mid-request is expected: its broken pipe is not reported."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay_s = 0.0
        self.received: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(self.headers.get("webhook-id", ""))
                time.sleep(receiver.delay_s)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # the sender went away (killed, stopped): it sends again, or another process does

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="chaos-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
