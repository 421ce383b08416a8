"""``run.py serve --workers N``: N full Paycast processes on one port, supervised by the parent.

Each worker is an ordinary ``run.py serve`` process (its own actors, pool and
background work) on the shared database: docs/architecture.md decision 6 makes several
processes on one database correct (conditional updates, ``SKIP LOCKED``,
``LISTEN/NOTIFY``). The workers bind the same port with ``SO_REUSEPORT``
(``PAYCAST_REUSE_PORT``), so the kernel spreads incoming connections over
them; no process proxies traffic.

The parent does no request work. It:

- reserves the port (a bound, non-listening ``SO_REUSEPORT`` socket, so
  ``PAYCAST_PORT=0`` gives every worker the same free port and nothing else
  can take it between restarts);
- starts the workers with the database it resolved and one admin token (with the
  embedded PostgreSQL, the parent holds a lease on it, so it stays up while workers
  restart, and each worker takes its own through the same data directory);
- prints the usual ``{"event": "listening", …}`` line once every worker listens;
- restarts a worker that exits on its own (at most ``_MAX_RESTARTS`` in
  ``_RESTART_WINDOW_S``; beyond that it stops everything and exits 1);
- on SIGTERM/SIGINT sends SIGTERM to every worker (a second signal is passed on
  too: "stop now"), waits for them to drain, and returns.

Workers are started with ``PR_SET_PDEATHSIG`` so they are not left behind when
the parent is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

from app.sockets import reuse_port_socket

log = logging.getLogger("paycast.workers")

ROOT = pathlib.Path(__file__).resolve().parent.parent
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0
_RESTART_DELAY_S = 1.0
_START_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1


class WorkersFailed(RuntimeError):
    """A worker did not start, or kept crashing."""


try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: workers then outlive a SIGKILLed parent
    _prctl = None


def die_with_parent() -> None:
    """``preexec_fn`` of a child that gets SIGTERM when its parent dies (Linux), even by SIGKILL.

    The "parent" is the *thread* that started the child: start it from a thread
    that lives as long as the process (the main thread, or a dedicated one).
    Runs in the child between fork and exec.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Worker:
    """One child ``run.py serve`` and the thread that reads its stdout."""

    def __init__(self, index: int, env: dict[str, str]) -> None:
        self.index = index
        self.listening = threading.Event()
        self.term_sent = False  # a second SIGTERM would mean "stop now", not "drain"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "serve"], cwd=ROOT,
            env={**env, "PAYCAST_WORKER_INDEX": str(index)},
            stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent,
            # Its own process group: a terminal's Ctrl-C reaches the parent only, which passes
            # one SIGTERM on (a second signal to a worker would mean "stop now", not "drain").
            process_group=0,
        )
        threading.Thread(target=self._read_stdout, name=f"worker-{index}-stdout", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{") and '"listening"' in line:
                self.listening.set()
                continue  # the parent prints one listening line for all workers
            sys.stdout.write(line)
            sys.stdout.flush()


def serve_workers(settings, dsn: str, admin_token: str, *, embedded: bool = False) -> int:
    """Run ``settings.workers`` workers on one port until SIGTERM/SIGINT.

    Args:
      settings: the parent's settings (host, port, workers, data_dir, graceful_timeout_s).
      dsn: the database every worker uses (already resolved by the parent).
      admin_token: shared by every worker.
      embedded: ``dsn`` is the embedded server of ``settings.data_dir``: each worker then
        takes its own lease on it (and supervises it) through the same data directory.

    Returns:
      The exit status: 0 after a requested stop, 1 when a worker kept failing.
    """
    placeholder = reuse_port_socket(settings.host, settings.port)
    port = placeholder.getsockname()[1]
    env = dict(os.environ, PAYCAST_PORT=str(port), PAYCAST_WORKERS="1", PAYCAST_REUSE_PORT="true",
               PAYCAST_ADMIN_TOKEN=admin_token)
    if embedded:
        env["PAYCAST_DATA_DIR"] = str(settings.data_dir.resolve())
    else:
        env["PAYCAST_DATABASE_URL"] = dsn
    stop = threading.Event()
    signals_seen = []

    def on_signal(signum, frame) -> None:
        signals_seen.append(signum)
        stop.set()
        for worker in workers:  # the first is "drain", a second one "stop now", as for one process
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM if len(signals_seen) == 1 else signum)
                worker.term_sent = True

    workers: list[_Worker] = []
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        workers.extend(_Worker(i, env) for i in range(settings.workers))
        _wait_listening(workers, stop)
        if not stop.is_set():
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            print(json.dumps({"event": "listening", "url": f"http://{host}:{port}", "workers": len(workers),
                              "pids": [w.proc.pid for w in workers],
                              "admin_token_set": bool(settings.admin_token)}), flush=True)
            log.info("Paycast listening on port %d with %d workers", port, len(workers))
        _supervise(workers, env, stop)
        return 0
    except WorkersFailed as exc:
        log.error("%s; stopping every worker", exc)
        return 1
    finally:
        _stop_all(workers, settings.graceful_timeout_s + 10)
        for s, handler in previous.items():
            signal.signal(s, handler)
        placeholder.close()


def _wait_listening(workers: list[_Worker], stop: threading.Event) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    for worker in workers:
        while not worker.listening.wait(0.2):
            if stop.is_set():
                return
            if worker.proc.poll() is not None:
                raise WorkersFailed(f"worker {worker.index} exited during start-up (status {worker.proc.returncode})")
            if time.monotonic() > deadline:
                raise WorkersFailed(f"worker {worker.index} did not listen within {_START_TIMEOUT_S:g} s")


def _supervise(workers: list[_Worker], env: dict[str, str], stop: threading.Event) -> None:
    """Restart workers that exit on their own until ``stop`` is set."""
    restarts: list[float] = []
    while not stop.wait(0.5):
        for i, worker in enumerate(workers):
            status = worker.proc.poll()
            if status is None or stop.is_set():
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < _RESTART_WINDOW_S] + [now]
            if len(restarts) > _MAX_RESTARTS:
                raise WorkersFailed(f"workers exited {len(restarts)} times within {_RESTART_WINDOW_S:g} s")
            log.warning("worker %d (pid %d) exited with status %s; restarting it", worker.index, worker.proc.pid,
                        status)
            if stop.wait(_RESTART_DELAY_S):
                return
            workers[i] = _Worker(worker.index, env)


def _stop_all(workers: list[_Worker], timeout: float) -> None:
    for worker in workers:
        if worker.proc.poll() is None and not worker.term_sent:
            worker.proc.send_signal(signal.SIGTERM)
            worker.term_sent = True
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in time; killing it", worker.index)
            worker.proc.kill()
            worker.proc.wait(5)
