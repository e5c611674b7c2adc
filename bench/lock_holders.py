"""What the holder of a contended row lock is doing: `python -m bench.lock_holders DB`.

Run it beside a load on database DB (``make bench``'s throwaway database, say, during
its hot rows): every 5 ms it reads ``pg_stat_activity`` and, for each backend that
others wait for and that waits for nobody itself (the lock's holder), notes its state
and wait event. ``idle in transaction / ClientRead`` means the lock is held while
PostgreSQL waits for the client's next statement: time a booking's round trips and
the web worker's scheduling add to every hand-off of the lock. ``active`` and the
``WAL*`` events are PostgreSQL's own work and the commit's flush.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

import asyncpg

SAMPLE = """
    SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid) AS blockers
    FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""

State = tuple[str | None, str | None, str | None]


async def sample(dsn: str, database: str, seconds: float, every: float) -> tuple[int, dict]:
    conn = await asyncpg.connect(dsn)
    holders: collections.Counter[State] = collections.Counter()
    backends: collections.Counter[State] = collections.Counter()
    samples = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = await conn.fetch(SAMPLE, database)
            samples += 1
            by_pid = {r["pid"]: r for r in rows}
            for row in rows:
                backends[(row["state"], row["wait_event_type"], row["wait_event"])] += 1
            for pid in {b for r in rows for b in r["blockers"]}:
                row = by_pid.get(pid)
                if row is not None and not row["blockers"]:
                    holders[(row["state"], row["wait_event_type"], row["wait_event"])] += 1
            await asyncio.sleep(every)
    finally:
        await conn.close()
    return samples, {"lock holders": holders, "all backends": backends}


def _label(state: State) -> str:
    return " / ".join(part or "-" for part in state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lock_holders", description=__doc__)
    parser.add_argument("database", help="the database under load")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--every", type=float, default=0.005, help="seconds between samples")
    args = parser.parse_args(argv)
    samples, tables = asyncio.run(sample(args.dsn, args.database, args.seconds, args.every))
    print(f"{samples} samples of {args.database} over {args.seconds:.0f} s")
    for title, counts in tables.items():
        total = sum(counts.values())
        print(f"{title} ({total} backend samples):")
        for state, n in counts.most_common(8):
            print(f"  {100 * n / total:5.1f} %  {_label(state)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
