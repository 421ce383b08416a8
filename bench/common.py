"""Shared pieces of the benchmarks in bench/: scenarios, the two load generators
(wrk with a generated Lua script, or a built-in epoll client), CPU accounting,
machine facts, results file, and a :class:`Session` that owns the embedded
PostgreSQL + one ``run.py serve`` process and cleans both up, also on Ctrl-C
or SIGTERM.

Only the standard library is imported at module level: this file is also the
Python load generator's child process (``python bench/common.py --_loadgen
CONFIG_FILE``).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
import pathlib
import platform
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS = BENCH_DIR / "RESULTS.md"


# --------------------------------------------------------------------------- scenarios


class Scenario:
    """One kind of request: method, path, headers, body and the status it must get.

    ``rotate`` holds alternative values for one header (e.g. several merchants'
    ``Authorization``); successive requests cycle through them.

    ``per_request`` is a list of ``(extra headers, body)``, one per request,
    for requests that must all differ (e.g. signed webhooks with distinct
    event ids); successive requests cycle through it. Header names and values
    and bodies must not contain tabs or newlines (compact JSON never does).

    ``count_body``: a literal substring; responses whose body contains it are
    counted (``matched`` in the result), e.g. ``"duplicate":true``.
    """

    def __init__(self, name: str, method: str, path: str, expect: int, headers: dict[str, str] | None = None,
                 body: str = "", rotate: tuple[str, list[str]] | None = None,
                 per_request: list[tuple[dict[str, str], str]] | None = None,
                 count_body: str | None = None) -> None:
        self.name, self.method, self.path, self.expect = name, method, path, expect
        self.headers = headers or {}
        self.body = body
        self.rotate = rotate
        self.per_request = per_request
        self.count_body = count_body

    def header_variants(self) -> list[dict[str, str]]:
        if not self.rotate:
            return [self.headers]
        name, values = self.rotate
        return [{**self.headers, name: v} for v in values]

    def variants(self) -> list[tuple[dict[str, str], str]]:
        if self.per_request is not None:
            return [({**self.headers, **extra}, body) for extra, body in self.per_request]
        return [(headers, self.body) for headers in self.header_variants()]

    def raw_requests(self, host: str) -> list[bytes]:
        out = []
        for headers, body in self.variants():
            lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "User-Agent: paycast-bench"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            if body or self.method == "POST":
                lines.append(f"Content-Length: {len(body.encode())}")
            out.append(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
        return out


# --------------------------------------------------------------------------- wrk


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for ASCII


def write_requests_file(scenario: Scenario, path: pathlib.Path) -> None:
    """``per_request`` as lines ``body<TAB>Name: value<TAB>...`` for the Lua loader."""
    with path.open("w") as f:
        for extra, body in scenario.per_request or []:
            f.write(body + "".join(f"\t{k}: {v}" for k, v in extra.items()) + "\n")


def wrk_script(scenario: Scenario, requests_file: pathlib.Path | None = None) -> str:
    headers = "".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}\n" for k, v in scenario.headers.items())
    body = f"wrk.body = {_lua_string(scenario.body)}\n" if scenario.body else ""
    rotate = ""
    if scenario.rotate:
        name, values = scenario.rotate
        rotate = (f"local rotate_values = {{{', '.join(_lua_string(v) for v in values)}}}\n"
                  "local rotate_i = 0\n"
                  "function request()\n"
                  "  rotate_i = rotate_i % #rotate_values + 1\n"
                  f"  wrk.headers[{_lua_string(name)}] = rotate_values[rotate_i]\n"
                  "  return wrk.format()\n"
                  "end\n")
    load = ""
    if requests_file is not None:
        # Every request formatted once at init (before the clock starts), then cycled.
        load = f"""local prebuilt = {{}}
local prebuilt_i = 0
local function load_requests()
  for line in io.lines({_lua_string(str(requests_file))}) do
    local fields = {{}}
    for field in string.gmatch(line, "[^\\t]+") do fields[#fields + 1] = field end
    local h = {{}}
    for k, v in pairs(wrk.headers) do h[k] = v end
    for j = 2, #fields do
      local k, v = string.match(fields[j], "^([^:]+):%s*(.*)$")
      h[k] = v
    end
    prebuilt[#prebuilt + 1] = wrk.format(nil, nil, h, fields[1])
  end
end
function request()
  prebuilt_i = prebuilt_i % #prebuilt + 1
  return prebuilt[prebuilt_i]
end
"""
    count = ""
    if scenario.count_body:
        count = (f"  if body and string.find(body, {_lua_string(scenario.count_body)}, 1, true) then "
                 "matched = matched + 1 end\n")
    return f"""-- generated by bench/common.py
wrk.method = {_lua_string(scenario.method)}
{body}{headers}{rotate}{load}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  ok = 0; bad = 0; bad_codes = ""; matched = 0
  {"load_requests()" if load else ""}
end
function response(status, headers, body)
  if status == {scenario.expect} then ok = ok + 1 else
    bad = bad + 1
    if bad <= 5 then bad_codes = bad_codes .. status .. " " end
  end
{count}end
function done(summary, latency, requests)
  local ok_total, bad_total, matched_total, codes = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok"); bad_total = bad_total + t:get("bad"); codes = codes .. t:get("bad_codes")
    matched_total = matched_total + t:get("matched")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_s":%f,"p50_ms":%f,"p99_ms":%f,"max_ms":%f,"ok":%d,"bad":%d,' ..
    '"bad_codes":"%s","socket_errors":%d,"matched":%d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, ok_total, bad_total, codes, e.connect + e.read + e.write + e.timeout, matched_total))
end
"""


def run_wrk(url: str, scenario: Scenario, connections: int, duration: float, workdir: pathlib.Path,
            register) -> dict:
    script = workdir / f"{scenario.name}.lua"
    requests_file = None
    if scenario.per_request is not None:
        requests_file = workdir / f"{scenario.name}.requests"
        write_requests_file(scenario, requests_file)
    script.write_text(wrk_script(scenario, requests_file))
    # One thread is plenty for ~1-5k req/s and leaves the cores to the server.
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
            "--latency", "-s", str(script), url + scenario.path]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    register(proc)
    out, _ = proc.communicate()
    register(None)
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            result = json.loads(line[len("BENCHJSON "):])
            result["bad_codes"] = result["bad_codes"].split()
            return result
    raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------- python generator


class _Conn:
    __slots__ = ("sock", "buf", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.sent = sock, bytearray(), 0.0


def _parse_response(buf: bytearray) -> tuple[int, int, bool] | None:
    """(status, bytes consumed, connection closes) for one complete response at the start of ``buf``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            close = True
    pos = end + 4
    if not chunked:
        return (status, pos + length, close) if len(buf) >= pos + length else None
    while True:  # chunked: size line, data, CRLF ... until the zero chunk and its trailer
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            return (status, trailer_end + 4, close) if trailer_end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2


def loadgen(host: str, port: int, requests: list[bytes], connections: int, duration: float, expect: int,
            count_body: bytes | None = None) -> dict:
    """Closed-loop keep-alive load from one thread with epoll; returns the same fields as wrk's report."""
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    codes: collections.Counter = collections.Counter()
    socket_errors = 0
    matched = 0
    sent = 0

    def connect() -> _Conn:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        sel.register(sock, selectors.EVENT_READ, conn)
        return conn

    def send(conn: _Conn, now: float) -> None:
        nonlocal sent
        conn.sent = now
        # A few hundred bytes into an empty socket buffer: never partial.
        conn.sock.send(requests[sent % len(requests)])
        sent += 1

    def reopen(conn: _Conn) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        fresh = connect()
        send(fresh, time.monotonic())

    start = time.monotonic()
    end = start + duration
    for _ in range(connections):
        send(connect(), time.monotonic())
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, _ in sel.select(timeout=end - now):
            conn: _Conn = key.data
            try:
                data = conn.sock.recv(262144)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                socket_errors += 1
                reopen(conn)
                continue
            conn.buf += data
            while True:
                parsed = _parse_response(conn.buf)
                if parsed is None:
                    break
                status, used, close = parsed
                t = time.monotonic()
                latencies.append(t - conn.sent)
                codes[status] += 1
                if count_body is not None and conn.buf.find(count_body, 0, used) >= 0:
                    matched += 1
                del conn.buf[:used]
                if close:
                    reopen(conn)
                    break
                if t < end:
                    send(conn, t)
    elapsed = time.monotonic() - start
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3 if latencies else 0.0

    bad = sum(n for code, n in codes.items() if code != expect)
    return {"requests": len(latencies), "duration_s": elapsed, "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": latencies[-1] * 1e3 if latencies else 0.0, "ok": codes[expect], "bad": bad,
            "bad_codes": [str(c) for c in codes if c != expect], "socket_errors": socket_errors,
            "matched": matched}


def run_python_loadgen(url: str, scenario: Scenario, connections: int, duration: float, workdir: pathlib.Path,
                       register) -> dict:
    parts = urllib.parse.urlsplit(url)
    config = {"host": parts.hostname, "port": parts.port,
              "requests": [r.decode("latin-1") for r in scenario.raw_requests(parts.netloc)],
              "connections": connections, "duration": duration, "expect": scenario.expect,
              "count_body": scenario.count_body}
    # A file, not argv: pre-generated requests can be tens of megabytes.
    config_file = workdir / f"{scenario.name}.loadgen.json"
    config_file.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, __file__, "--_loadgen", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    register(proc)
    out, err = proc.communicate()
    register(None)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {proc.returncode}):\n{err}")
    return json.loads(out)


def loadgen_child(config_file: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: just die, the parent cleans up
    config = json.loads(pathlib.Path(config_file).read_text())
    count_body = config.get("count_body")
    result = loadgen(config["host"], config["port"], [r.encode("latin-1") for r in config["requests"]],
                     config["connections"], config["duration"], config["expect"],
                     count_body.encode() if count_body else None)
    print(json.dumps(result))
    return 0


def generator_description(generator: str) -> str:
    if generator == "wrk":
        return "wrk " + wrk_version() + " (1 thread, Lua script)"
    return "built-in Python epoll client (1 thread, separate process)"


# --------------------------------------------------------------------------- CPU accounting


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent by a set of processes between two snapshots (psutil)."""

    def __init__(self, roots: list[int], include_children: bool) -> None:
        import psutil

        self._psutil = psutil
        self._roots = roots
        self._children = include_children

    def _snapshot(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in self._roots:
            try:
                proc = self._psutil.Process(pid)
                procs = [proc] + (proc.children(recursive=True) if self._children else [])
            except self._psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    out[p.pid] = t.user + t.system
                except self._psutil.Error:
                    pass
        return out

    def start(self) -> None:
        self._before = self._snapshot()

    def stop(self) -> float:
        after = self._snapshot()
        return sum(v - self._before.get(pid, 0.0) for pid, v in after.items())


def postmaster_pid(pg) -> int | None:
    try:
        first = (pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- machine, formatting, results


def machine_facts() -> dict[str, str]:
    cpu = "?"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release()}


def load_average() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def add_common_arguments(parser, *, default_duration: float = 10) -> None:
    """The options every benchmark here shares (same names, same meaning)."""
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64], help="connection counts (32 64)")
    parser.add_argument("--duration", type=float, default=default_duration,
                        help=f"seconds measured per scenario ({default_duration:g})")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load before each (2)")
    parser.add_argument("--dsn", default=os.environ.get("PAYCAST_DATABASE_URL"),
                        help="use this PostgreSQL (default: $PAYCAST_DATABASE_URL, else an embedded one)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="auto = wrk if installed, else the built-in Python client")


def resolve_generator(parser, generator: str) -> str:
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --generator python")
    return generator


def parse_server_env(parser, items: list[str]) -> dict[str, str]:
    server_env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("PAYCAST_"):
            parser.error(f"--server-env wants PAYCAST_X=VALUE, got {item!r}")
        server_env[name] = value
    return server_env


def append_results(script: str, generator: str, gen_cpu: str, args, extra: list[str], table: str,
                   after_table: list[str] | None = None) -> None:
    """Append one run to RESULTS.md: date, exact command, machine, generator, database, notes, table."""
    facts = machine_facts()
    command = f".venv/bin/python bench/{script} " + shlex.join(sys.argv[1:])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    db = "external (--dsn / PAYCAST_DATABASE_URL)" if args.dsn else "embedded PostgreSQL (fresh temp dir)"
    text = [
        f"## {when}",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: nproc={facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}, Python {facts['python']}",
        f"- generator: {generator}: {generator_description(generator)}; {gen_cpu}",
        f"- database: {db}; duration {args.duration:g} s per cell after {args.warmup:g} s warm-up",
        f"- load average (1/5/15 min) at the end: {load_average()} (other sessions share this box)",
        *extra,
    ]
    if getattr(args, "server_env", None):
        text.append(f"- server settings: {' '.join(args.server_env)}")
    if getattr(args, "note", ""):
        text.append(f"- note: {args.note}")
    if getattr(args, "py_spy", None):
        text.append("- py-spy was attached during the measured runs (profiler overhead included)")
    text += ["", table, ""]
    if after_table:
        text += after_table + [""]
    header = "" if RESULTS.exists() else (
        "# Benchmark results\n\nAppended by the scripts in `bench/` (see README.md). Every ratio is a "
        "throughput ÷ the bare `/healthz` req/s at the same connection count in the same run.\n\n")
    with RESULTS.open("a") as f:
        f.write(header + "\n".join(text) + "\n")


# --------------------------------------------------------------------------- the session


class Session:
    """One database (embedded in a temp dir unless ``dsn``) + one server process, and the load runs.

    Use through :func:`session`, which stops everything on exit, Ctrl-C or SIGTERM.
    """

    def __init__(self, dsn: str | None, server_env: dict[str, str], generator: str, duration: float,
                 warmup: float) -> None:
        self.dsn_given = dsn
        self.dsn: str | None = dsn
        self.server_env = server_env
        self.generator = generator
        self.duration, self.warmup = duration, warmup
        self.tmp: str | None = None
        self.workdir: str | None = None
        self.pg = None
        self.server = None
        self.loadgen: subprocess.Popen | None = None
        self.server_cpu: CpuMeter | None = None
        self.pg_cpu: CpuMeter | None = None

    def start(self) -> "Session":
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.support import ServerProcess

        if not self.dsn:
            from storage.embedded import EmbeddedPostgres

            self.tmp = tempfile.mkdtemp(prefix="paycast-bench-", dir="/tmp")
            self.pg = EmbeddedPostgres(pathlib.Path(self.tmp))
            self.pg.start()
            self.pg.ensure_database("paycast_bench")
            self.dsn = self.pg.dsn("paycast_bench")
            print(f"embedded PostgreSQL in {self.tmp}", flush=True)
        else:
            print("using the PostgreSQL given by --dsn / PAYCAST_DATABASE_URL", flush=True)
        self.server = ServerProcess(self.dsn, **self.server_env).start(timeout=60)
        self.workdir = tempfile.mkdtemp(prefix="paycast-bench-wrk-")
        self.server_cpu = CpuMeter([self.server.proc.pid], include_children=False)
        pg_pid = postmaster_pid(self.pg) if self.pg is not None else None
        self.pg_cpu = CpuMeter([pg_pid], include_children=True) if pg_pid else None
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def create_merchant(self, name: str) -> str:
        return self.server.create_merchant(name)

    def _register(self, proc: subprocess.Popen | None) -> None:
        self.loadgen = proc

    def load(self, scenario: Scenario, connections: int, seconds: float) -> dict:
        """One unmeasured-by-us load run; the generator's own report."""
        if self.generator == "wrk":
            return run_wrk(self.url, scenario, connections, seconds, pathlib.Path(self.workdir), self._register)
        return run_python_loadgen(self.url, scenario, connections, seconds, pathlib.Path(self.workdir),
                                  self._register)

    def measure(self, scenario: Scenario, connections: int, profile: str | None = None,
                warmup: bool = True) -> dict:
        """Warm-up (unless ``warmup=False``), then one measured run with CPU accounting and an optional
        py-spy profile (raw collapsed stacks, per thread) of the server into ``profile``."""
        if warmup and self.warmup > 0:
            self.load(scenario, connections, self.warmup)
        spy = None
        if profile:
            spy = subprocess.Popen([shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy"),
                                    "record", "--pid", str(self.server.proc.pid), "--duration",
                                    str(max(1, round(self.duration))), "--rate", "100", "--threads",
                                    "--format", "raw", "-o", profile],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children_before = children_cpu()
        self.server_cpu.start()
        if self.pg_cpu:
            self.pg_cpu.start()
        result = self.load(scenario, connections, self.duration)
        server_s = self.server_cpu.stop()
        result["pg_cpu_us"] = self.pg_cpu.stop() / max(1, result["requests"]) * 1e6 if self.pg_cpu else None
        result["loadgen_cpu_s"] = children_cpu() - children_before
        if spy is not None:
            spy.wait()  # reaped after the generator's CPU was read: not counted in it
        result["rps"] = result["requests"] / result["duration_s"]
        result["server_cpu_us"] = server_s / max(1, result["requests"]) * 1e6
        result["server_cpu_cores"] = server_s / result["duration_s"]
        print(f"  {scenario.name:9} c={connections:<4} {result['rps']:8,.0f}/s  p50 {fmt_ms(result['p50_ms'])} ms"
              f"  p99 {fmt_ms(result['p99_ms'])} ms  unexpected {result['bad']} {result['bad_codes'] or ''}"
              f" socket errors {result['socket_errors']}  server {result['server_cpu_cores']:.2f} cores"
              f" ({result['server_cpu_us']:.0f} µs/req)  generator {result['loadgen_cpu_s']:.2f} CPU s",
              flush=True)
        return result

    def close(self) -> None:
        proc = self.loadgen
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self.server is not None:
            self.server.stop()
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"could not stop PostgreSQL: {exc}", file=sys.stderr)
        for path in (self.tmp, self.workdir):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def session(dsn: str | None, server_env: dict[str, str], generator: str, duration: float, warmup: float):
    """A started :class:`Session`; SIGTERM raises KeyboardInterrupt; everything is stopped on the way out."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    s = Session(dsn, server_env, generator, duration, warmup)
    try:
        yield s.start()
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        s.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_loadgen":
        sys.exit(loadgen_child(sys.argv[2]))
    sys.exit("bench/common.py is a library; run bench/bench_payments.py or bench/bench_webhooks.py")
