"""What a realtime notification costs the transaction that commits an event.

Issue 10 ("Notifications off the commit path"): an event of a payment with a
``customer_id`` also writes the customer's realtime message and used to
``pg_notify`` inside the same transaction; PostgreSQL serialises the commits
of notifying transactions on one database-wide lock. This measures event
transactions (the realtime projection included, exactly as the payment path
runs it: ``storage.events.append_all``) per second with ``--workers``
concurrent writers, each on its own merchant (so the merchant's seq row lock
does not serialise them), in three interleaved modes:

- ``no_customer``: events without a customer_id (no realtime message);
- ``inline_notify``: with a customer_id, ``pg_notify`` inside the transaction
  (the old path; what ``storage.after_commit.notify`` still does outside a
  collecting unit of work);
- ``after_commit``: with a customer_id, notifications sent after commit by
  ``storage.after_commit.Notifier`` (the path ``Database.transaction`` takes).

A LISTEN connection drains the channel throughout, as a realtime process would.

    .venv/bin/python -m bench.bench_commit_notify --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import asyncpg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from domain.events import NewEvent  # noqa: E402
from pg import migrate  # noqa: E402
from storage import after_commit  # noqa: E402
from storage import events as event_log  # noqa: E402
from storage import realtime as realtime_store  # noqa: E402,F401 - registers the realtime projection
from storage.database import _init_connection  # noqa: E402
from pg.cluster import EmbeddedPostgres  # noqa: E402

MODES = ("no_customer", "inline_notify", "after_commit")


async def _round(pool: asyncpg.Pool, notifier: after_commit.Notifier, mode: str, merchants: list[str],
                 seconds: float) -> tuple[float, float]:
    """Transactions per second and mean commit-side latency (ms) for one mode."""
    stop = time.perf_counter() + seconds
    counts = [0] * len(merchants)
    latencies: list[float] = []

    async def worker(i: int) -> None:
        merchant = merchants[i]
        customer = None if mode == "no_customer" else f"cus_{i}"
        n = 0
        while time.perf_counter() < stop:
            n += 1
            snapshot = {"id": f"pay_{mode}_{i}_{n}", "object": "payment", "status": "succeeded",
                        "customer_id": customer}
            event = NewEvent("payment.succeeded", snapshot["id"], snapshot, customer)
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                if mode == "after_commit":
                    with after_commit.collecting() as queued:
                        async with conn.transaction():
                            await event_log.append_all(conn, merchant, [event])
                    notifier.add(queued)
                else:
                    async with conn.transaction():
                        await event_log.append_all(conn, merchant, [event])
            latencies.append(time.perf_counter() - t0)
            counts[i] += 1

    await asyncio.gather(*(worker(i) for i in range(len(merchants))))
    return sum(counts) / seconds, statistics.fmean(latencies) * 1000


async def main_async(args) -> list[str]:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pcnotify", dir="/tmp"))
    pg = EmbeddedPostgres(tmp)
    dsn = pg.start()
    try:
        conn = await asyncpg.connect(dsn)
        await migrate.apply(conn)
        merchants = [f"mer_bench_{i}" for i in range(args.workers)]
        await conn.executemany("INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, $1, $1)",
                               [(m,) for m in merchants])
        received = 0

        def on_notify(*_a) -> None:
            nonlocal received
            received += 1

        await conn.add_listener(realtime_store.CHANNEL, on_notify)
        pool = await asyncpg.create_pool(dsn, min_size=args.workers + 1, max_size=args.workers + 1,
                                         init=_init_connection)
        notifier = after_commit.Notifier(pool)
        results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        await _round(pool, notifier, "after_commit", merchants, 1.0)  # warm-up
        for _ in range(args.rounds):
            for mode in MODES:
                results[mode].append(await _round(pool, notifier, mode, merchants, args.seconds))
        await notifier.close()
        await pool.close()
        await conn.close()
        lines = [f"| mode | tx/s (median of {args.rounds}) | mean tx latency ms | vs no_customer |",
                 "|---|---|---|---|"]
        base = statistics.median(r[0] for r in results["no_customer"])
        for mode in MODES:
            tps = statistics.median(r[0] for r in results[mode])
            lat = statistics.median(r[1] for r in results[mode])
            lines.append(f"| {mode} | {tps:,.0f} | {lat:.2f} | {tps / base:.2f} |")
        lines.append(f"\n{args.workers} writers, one merchant each; notifier sends: {notifier.sends}, "
                     f"notifications: {notifier.sent}, received by the listener: {received}")
        return lines
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
