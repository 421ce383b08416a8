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
from dataclasses import asdict

import pytest

from tests.support import ROOT


def _simulate(*args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYCAST_")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "simulate", "--chaos", *args], cwd=ROOT,
                          env=clean, capture_output=True, text=True, timeout=120)


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
    """The schedule is a pure function of the seed and the topology (in-process: no server)."""
    from tools.chaos import make_schedule
    from tools.chaos_cluster import Topology

    def schedule(seed: int, topology: str) -> dict:
        made = make_schedule(seed, 60, Topology.parse(topology))
        return json.loads(json.dumps({"fingerprint": made.fingerprint(), **asdict(made)}))  # as the CLI prints it

    single = schedule(4, "single")
    assert single == _schedule("4", "single")  # the CLI prints the same
    for topology, kinds in (("workers:3", {"worker_child_kill9", "pause"}),
                            ("roles", {"worker_role_kill9", "realtime_kill9", "pause"})):
        one = schedule(4, topology)
        assert one == schedule(4, topology)
        assert one["fingerprint"] != single["fingerprint"]
        assert one["ops"] == single["ops"]  # the operations are the seed's; the topology adds faults
        faults = {f["kind"]: f for f in one["faults"]}
        assert set(faults) == {"server_kill9", "postgres_kill9"} | kinds
        assert faults["pause"]["seconds"] > 10  # longer than an inbox lease
    assert schedule(5, "roles")["faults"] != schedule(4, "roles")["faults"]
    assert _simulate("--topology", "workers:1", "--print-schedule").returncode == 2


def _rows(out: str):
    def row(name: str) -> str:
        match = re.search(rf"^{re.escape(name)}\s+(\S+)", out, re.M)
        assert match, f"no {name!r} row in:\n{out}"
        return match.group(1)
    return row


# The short seed of each topology, the three runs at once (they mostly wait: restarts, a
# stop longer than a lease): 40-120 s on 2 shared cores. Each subprocess's timeout stays
# under the test's, so a run that hangs is killed by the test and its servers stop when
# their SIGTERM-on-parent-death fires, rather than being orphaned by pytest-timeout.
TOPOLOGY_RUNS = {
    "single": (48, ("server_kill9", "postgres_kill9")),
    "workers:2": (40, ("server_kill9", "postgres_kill9", "worker_child_kill9", "pause")),
    "roles": (40, ("server_kill9", "postgres_kill9", "worker_role_kill9", "realtime_kill9", "pause")),
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_chaos_run_of_each_topology_ends_with_no_violation():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYCAST_")}
    # A PAYCAST_* setting of the caller reaches the servers; the run's own ones are named, not silently replaced.
    env = {**clean, "PAYCAST_GC_TUNING": "true", "PAYCAST_PORT": "1"}
    runs = {}
    try:
        for topology, (operations, _) in TOPOLOGY_RUNS.items():
            # --delivery-wait 0: outgoing webhooks a killed holder leased wait out its 45 s lease after the end.
            runs[topology] = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), "simulate", "--chaos", "--seed", "3", "--operations",
                 str(operations), "--concurrency", "6", "--topology", topology, "--delivery-wait", "0"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        outputs = {topology: run.communicate(timeout=540) for topology, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait(10)
    for topology, (out, err) in outputs.items():
        _check_run(topology, runs[topology].returncode, out, err)


def _check_run(topology: str, returncode: int, out: str, err: str) -> None:
    operations, faults = TOPOLOGY_RUNS[topology]
    assert returncode == 0, f"{topology}:\n{out[-4000:]}{err[-4000:]}"
    assert "the run sets these itself (yours are not used): PAYCAST_PORT" in out
    row = _rows(out)
    assert row("topology") == topology
    assert row("invariant violations (run.py check)") == "0"
    assert row("pending without review flag") == "0"
    assert row("realtime seq gaps") == "0"
    assert row("realtime seq duplicates") == "0"
    assert row("500 responses (bugs: faults must give 503)") == "0"
    assert int(row("operations")) == operations
    for fault in faults:
        assert int(row(f"  {fault}")) == 1, (topology, fault)
    if topology != "single":
        assert int(row("realtime frames")) > 0
        assert re.search(r"^leases taken over \(inbox / delivery\)\s+\d+ / \d+", out, re.M)
    if topology == "roles":  # the killed realtime process had a client: it came back through the other one
        assert re.search(r"^  realtime-[12]\s+[1-9]", out, re.M)
    assert "chaos: OK" in out
