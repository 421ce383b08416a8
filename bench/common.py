"""Shared pieces of the benchmarks in bench/: scenarios, the load generator (wrk
with a generated Lua script; the only generator), CPU accounting, machine facts,
results file, and a :class:`Session` that owns the embedded PostgreSQL + one
``run.py serve`` process and cleans both up, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import pathlib
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS = BENCH_DIR / "RESULTS.md"
# Servers started on an external database (PAYCAST_DATABASE_URL) need the key ring
# of secrets at rest (storage/secrets_box.py): a throwaway one for the run, unless
# the environment gives one. Processes started from here inherit it.
os.environ.setdefault("PAYCAST_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())


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

    ``lua``: a Lua chunk that defines ``request()`` and ``response(status,
    headers, body)`` itself (for flows of several requests); it updates the
    globals ``ok``, ``bad``, ``bad_codes`` and ``matched`` that the generated
    ``done()`` reports. ``expect`` is then only informative.
    """

    def __init__(self, name: str, method: str, path: str, expect: int, headers: dict[str, str] | None = None,
                 body: str = "", rotate: tuple[str, list[str]] | None = None,
                 per_request: list[tuple[dict[str, str], str]] | None = None,
                 count_body: str | None = None, lua: str | None = None) -> None:
        self.name, self.method, self.path, self.expect = name, method, path, expect
        self.lua = lua
        self.headers = headers or {}
        self.body = body
        self.rotate = rotate
        self.per_request = per_request
        self.count_body = count_body


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
    response = scenario.lua or f"""function response(status, headers, body)
  if status == {scenario.expect} then ok = ok + 1 else
    bad = bad + 1
    if bad <= 5 then bad_codes = bad_codes .. status .. " " end
  end
{count}end"""
    return f"""-- generated by bench/common.py
wrk.method = {_lua_string(scenario.method)}
{body}{headers}{rotate}{load}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  ok = 0; bad = 0; bad_codes = ""; matched = 0
  {"load_requests()" if load else ""}
end
{response}
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


def generator_description(generator: str = "wrk") -> str:
    return "wrk " + wrk_version() + " (1 thread, Lua script)"


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


def embedded_postgres(directory: pathlib.Path, *databases: str):
    """An embedded PostgreSQL (pg/cluster.py) started in ``directory``, with ``databases`` created.

    Returns:
      The started :class:`pg.cluster.EmbeddedPostgres` (its ``dsn(name)``); the caller stops it
      (:func:`stop_everything`).
    """
    from pg.cluster import EmbeddedPostgres

    pg = EmbeddedPostgres(directory)
    pg.start()
    for name in databases:
        pg.ensure_database(name)
    return pg


def realtime_token_key(dsn: str) -> bytes:
    """The deployment's realtime token key, for a bench that signs its clients' tokens itself.

    Read (made when missing) by the product's own :func:`storage.realtime.token_secret`, which
    opens it with the ``PAYCAST_SECRETS_KEY`` this module put in the environment of the
    servers it starts.
    """
    import asyncio

    import asyncpg

    from storage.realtime import token_secret
    from storage.secrets_box import SecretsBox, parse_keys

    async def read() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return await token_secret(conn, SecretsBox(parse_keys(os.environ["PAYCAST_SECRETS_KEY"])))
        finally:
            await conn.close()

    return asyncio.run(read()).encode()


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


def resolve_generator(parser) -> str:
    """wrk is the only load generator (``make bench`` installs it)."""
    if not shutil.which("wrk"):
        parser.error("wrk is not installed: run `make wrk` (apt-get install wrk, as root)")
    return "wrk"


def parse_server_env(parser, items: list[str]) -> dict[str, str]:
    server_env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("PAYCAST_"):
            parser.error(f"--server-env wants PAYCAST_X=VALUE, got {item!r}")
        server_env[name] = value
    return server_env


def utc_now() -> str:
    """The time a RESULTS.md entry is headed with."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(script: str, suffix: str = "") -> str:
    """The exact command of this run, as a RESULTS.md line shows it."""
    return (f".venv/bin/python bench/{script} " + shlex.join(sys.argv[1:])).strip() + suffix


def machine_line(facts: dict[str, str] | None = None) -> str:
    facts = facts or machine_facts()
    return f"nproc={facts['nproc']}, {facts['cpu']}, Linux {facts['kernel']}, Python {facts['python']}"


def database_line(args) -> str:
    return "external (--dsn / PAYCAST_DATABASE_URL)" if args.dsn else "embedded PostgreSQL (fresh temp dir)"


def write_results(title: str, lines: list[str], tables: list[str]) -> None:
    """Append one entry to RESULTS.md: ``## title``, its lines, then each table."""
    text = [f"## {title}", "", *lines, ""]
    for table in tables:
        text += [table, ""]
    header = "" if RESULTS.exists() else (
        "# Benchmark results\n\nAppended by the scripts in `bench/` (see README.md). Every ratio is a "
        "throughput ÷ the bare `/healthz` req/s at the same connection count in the same run.\n\n")
    with RESULTS.open("a") as f:
        f.write(header + "\n".join(text) + "\n")


def add_save_arguments(parser, *, server_env_help: str = "extra setting for the server process (repeatable)",
                       py_spy_help: str | None = None) -> None:
    """``--server-env``, ``--py-spy`` (when its help is given), ``--no-save`` and ``--note``."""
    parser.add_argument("--server-env", action="append", default=[], metavar="PAYCAST_X=VALUE", help=server_env_help)
    if py_spy_help:
        parser.add_argument("--py-spy", metavar="DIR", help=py_spy_help)
    parser.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--note", default="", help="one line saved with the results")


def append_results(script: str, generator: str, gen_cpu: str, args, extra: list[str], table: str,
                   after_table: list[str] | None = None) -> None:
    """Append one run to RESULTS.md: date, exact command, machine, generator, database, notes, table."""
    text = [
        f"- command: `{command_line(script)}`",
        f"- machine: {machine_line()}",
        f"- generator: {generator}: {generator_description(generator)}; {gen_cpu}",
        f"- database: {database_line(args)}; duration {args.duration:g} s per cell after {args.warmup:g} s warm-up",
        f"- load average (1/5/15 min) at the end: {load_average()} (other sessions share this box)",
        *extra,
    ]
    if getattr(args, "server_env", None):
        text.append(f"- server settings: {' '.join(args.server_env)}")
    if getattr(args, "note", ""):
        text.append(f"- note: {args.note}")
    if getattr(args, "py_spy", None):
        text.append("- py-spy was attached during the measured runs (profiler overhead included)")
    write_results(utc_now(), text, [table, "\n".join(after_table)] if after_table else [table])


def stop_everything(loadgen: subprocess.Popen | None, servers: list, pg, paths: list) -> None:
    """Stop a load generator, servers (anything with ``stop()``) and an embedded PostgreSQL,
    then remove temporary directories; a failure to stop one does not keep the rest running."""
    if loadgen is not None and loadgen.poll() is None:
        loadgen.kill()
        loadgen.wait()
    for server in servers:
        server.stop()
    if pg is not None:
        try:
            pg.stop()
        except Exception as exc:  # noqa: BLE001 - keep cleaning up
            print(f"could not stop PostgreSQL: {exc}", file=sys.stderr)
    for path in paths:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


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
            self.tmp = tempfile.mkdtemp(prefix="paycast-bench-", dir="/tmp")
            self.pg = embedded_postgres(pathlib.Path(self.tmp), "paycast_bench")
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
        return run_wrk(self.url, scenario, connections, seconds, pathlib.Path(self.workdir), self._register)

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
        stop_everything(self.loadgen, [self.server] if self.server is not None else [], self.pg,
                        [self.tmp, self.workdir])


@contextlib.contextmanager
def cleanup_on_exit(close) -> Iterator[None]:
    """Run the block with SIGTERM raising KeyboardInterrupt; on the way out, however it ends,
    run ``close()`` with SIGINT and SIGTERM ignored (a second Ctrl-C cannot cut the cleanup
    short), then put the default handlers back. An interrupt is reported and raised again."""

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def session(dsn: str | None, server_env: dict[str, str], generator: str, duration: float, warmup: float):
    """A started :class:`Session`; SIGTERM raises KeyboardInterrupt; everything is stopped on the way out."""
    s = Session(dsn, server_env, generator, duration, warmup)
    with cleanup_on_exit(s.close):
        yield s.start()


if __name__ == "__main__":
    sys.exit("bench/common.py is a library; run bench/bench_compare.py (make bench) or bench/bench_webhooks.py")
