#!/usr/bin/env python3
"""What one payment costs the server: CPU µs of its process and database round trips.

    .venv/bin/python bench/cost_per_payment.py [--payments 300] [--dsn URL]

Drives N payments one after another (one connection, so the numbers do not
depend on how loaded the shared machine is as much as throughput would) for
each flow, and reads the server process's CPU time (psutil) and its
``paycast_db_round_trips_total`` / ``paycast_db_units_total`` counters
(/metrics) around each flow. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import sys
import tempfile

import psutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import ServerProcess, payment_body  # noqa: E402

_TRIPS = re.compile(r'^paycast_db_(round_trips|units)_total\{unit="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _totals(client) -> tuple[float, float]:
    trips = units = 0.0
    for kind, _unit, value in _TRIPS.findall(client.get("/metrics").text):
        if kind == "round_trips":
            trips += float(value)
        else:
            units += float(value)
    return trips, units


def _create_then_confirm(client, i: int) -> None:
    pay = client.post("/v1/payments", json=payment_body(1000 + i)).json()
    r = client.post(f"/v1/payments/{pay['id']}/confirm", headers={"Idempotency-Key": f"k{pay['id']}"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text


def _confirm_true(client, i: int) -> None:
    r = client.post("/v1/payments", json=payment_body(1000 + i, confirm=True))
    assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text


def _confirm_true_customer(client, i: int) -> None:
    r = client.post("/v1/payments", json=payment_body(1000 + i, confirm=True, customer_id=f"cus_{i % 20}"))
    assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text


FLOWS = {
    "create → confirm (Idempotency-Key on confirm)": _create_then_confirm,
    "create with confirm: true": _confirm_true,
    "confirm: true with customer_id (realtime projection)": _confirm_true_customer,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=300)
    parser.add_argument("--dsn", help="PostgreSQL URL (default: an embedded PostgreSQL in a temp dir)")
    args = parser.parse_args()
    tmp = pg = None
    dsn = args.dsn
    if dsn is None:
        from pg.cluster import EmbeddedPostgres

        tmp = tempfile.mkdtemp(prefix="pccost", dir="/tmp")
        pg = EmbeddedPostgres(pathlib.Path(tmp))
        dsn = pg.start()
    server = ServerProcess(dsn).start()
    try:
        proc = psutil.Process(server.proc.pid)
        with server.client(server.create_merchant("cost")) as client:
            rows = []
            for name, flow in FLOWS.items():
                for i in range(20):  # warm up: statement caches, actors, connections
                    flow(client, i)
                trips0, units0 = _totals(client)
                cpu0 = sum(proc.cpu_times()[:2])
                for i in range(args.payments):
                    flow(client, i)
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                trips1, units1 = _totals(client)
                # /metrics itself runs one unit (a read); leave it out.
                rows.append((name, cpu / args.payments * 1e6, (trips1 - trips0 - 1) / args.payments,
                             (units1 - units0 - 1) / args.payments))
        print(f"payments per flow: {args.payments}, one connection, server pid {server.proc.pid}")
        print("| flow | server CPU µs/payment | round trips/payment | units of work/payment |")
        print("|---|---:|---:|---:|")
        for name, cpu_us, trips, units in rows:
            print(f"| {name} | {cpu_us:,.0f} | {trips:.1f} | {units:.1f} |")
    finally:
        server.stop()
        if pg is not None:
            pg.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
