"""``run.py simulate --chaos``: a short seed in CI. The same seed gives the same
fault schedule; the run ends with every invariant holding and nothing left
pending without a review flag."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.support import ROOT


def _simulate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYCAST_")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "simulate", "--chaos", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_same_seed_same_fault_schedule():
    one, again, other = (_simulate("--seed", seed, "--operations", "60", "--print-schedule") for seed in "447")
    assert one.returncode == again.returncode == other.returncode == 0
    assert one.stdout == again.stdout
    assert json.loads(one.stdout)["fingerprint"] != json.loads(other.stdout)["fingerprint"]
    schedule = json.loads(one.stdout)
    faults = {f for op in schedule["ops"] for f in op["faults"]}
    assert {"duplicate_webhook", "reordered_webhook", "flaky_connector"} <= faults
    assert 0 < schedule["kill_server_at"] < schedule["crash_postgres_at"] < len(schedule["ops"])


def test_short_chaos_run_ends_with_no_violation():
    done = _simulate("--seed", "3", "--operations", "48", "--concurrency", "6")
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]

    def row(name: str) -> str:
        match = re.search(rf"^{re.escape(name)}\s+(\S+)", out, re.M)
        assert match, f"no {name!r} row in:\n{out}"
        return match.group(1)

    assert row("invariant violations (run.py check)") == "0"
    assert row("pending without review flag") == "0"
    assert row("realtime seq gaps") == "0"
    assert int(row("operations")) == 48
    assert int(row("  server_kill9")) == 1 and int(row("  postgres_kill9")) == 1
    assert "chaos: OK" in out
