"""``run.py simulate --chaos``: a short seed of each topology in CI. The same seed
gives the same fault schedule per topology; each run ends with every invariant
holding, nothing left pending without a review flag, no realtime gap or
duplicate and no 500."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT


def _simulate(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYCAST_")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "simulate", "--chaos", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def _schedule(seed: str, topology: str) -> dict:
    done = _simulate("--seed", seed, "--operations", "60", "--topology", topology, "--print-schedule")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_same_seed_same_fault_schedule():
    one, again, other = (_schedule(seed, "single") for seed in "447")
    assert one == again
    assert one["fingerprint"] != other["fingerprint"]
    faults = {f for op in one["ops"] for f in op["faults"]}
    assert {"duplicate_webhook", "reordered_webhook", "flaky_connector"} <= faults
    at = {f["kind"]: f["at"] for f in one["faults"]}
    assert set(at) == {"server_kill9", "postgres_kill9"}
    assert 0 < at["server_kill9"] < at["postgres_kill9"] < len(one["ops"])


def test_same_seed_same_fault_schedule_per_topology():
    single = _schedule("4", "single")
    for topology, kinds in (("workers:3", {"worker_child_kill9", "pause"}),
                            ("roles", {"worker_role_kill9", "realtime_kill9", "pause"})):
        one, again = _schedule("4", topology), _schedule("4", topology)
        assert one == again
        assert one["fingerprint"] != single["fingerprint"]
        assert one["ops"] == single["ops"]  # the operations are the seed's; the topology adds faults
        faults = {f["kind"]: f for f in one["faults"]}
        assert set(faults) == {"server_kill9", "postgres_kill9"} | kinds
        assert faults["pause"]["seconds"] > 10  # longer than an inbox lease
    assert _schedule("5", "roles")["faults"] != _schedule("4", "roles")["faults"]
    assert _simulate("--topology", "workers:1", "--print-schedule").returncode == 2


def _rows(out: str):
    def row(name: str) -> str:
        match = re.search(rf"^{re.escape(name)}\s+(\S+)", out, re.M)
        assert match, f"no {name!r} row in:\n{out}"
        return match.group(1)
    return row


# A run of the short seed takes 40-120 s on 2 shared cores; the subprocess's own timeout
# stays under the test's, so a run that hangs is killed by subprocess.run (its servers
# then stop when their SIGTERM-on-parent-death fires) rather than orphaned by pytest-timeout.
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("topology, operations, faults", [
    ("single", 48, ("server_kill9", "postgres_kill9")),
    ("workers:2", 40, ("server_kill9", "postgres_kill9", "worker_child_kill9", "pause")),
    ("roles", 40, ("server_kill9", "postgres_kill9", "worker_role_kill9", "realtime_kill9", "pause")),
])
def test_short_chaos_run_ends_with_no_violation(topology, operations, faults):
    # A PAYCAST_* setting of the caller reaches the servers; the run's own ones are named, not silently replaced.
    # --delivery-wait 0: outgoing webhooks a killed holder leased wait out its 45 s lease after the run ends.
    done = _simulate("--seed", "3", "--operations", str(operations), "--concurrency", "6", "--topology", topology,
                     "--delivery-wait", "0", timeout=540, PAYCAST_GC_TUNING="true", PAYCAST_PORT="1")
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    assert "the run sets these itself (yours are not used): PAYCAST_PORT" in out
    row = _rows(out)
    assert row("topology") == topology
    assert row("invariant violations (run.py check)") == "0"
    assert row("pending without review flag") == "0"
    assert row("realtime seq gaps") == "0" and row("realtime seq duplicates") == "0"
    assert row("500 responses (bugs: faults must give 503)") == "0"
    assert int(row("operations")) == operations
    for fault in faults:
        assert int(row(f"  {fault}")) == 1, fault
    if topology != "single":
        assert int(row("realtime frames")) > 0
        assert re.search(r"^leases taken over \(inbox / delivery\)\s+\d+ / \d+", out, re.M)
    if topology == "roles":  # the killed realtime process had a client: it came back through the other one
        assert re.search(r"^  realtime-[12]\s+[1-9]", out, re.M)
    assert "chaos: OK" in out
