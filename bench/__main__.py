"""``python -m bench``: stock kombu SQS vs the kit's bundled transport, in one run on
one fauxqs per pass; prints a table and writes bench/results.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.passes import VARIANTS, Setting, measure

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks in the throughput pass")
    parser.add_argument("--counted-tasks", type=int, default=1000,
                        help="tasks in the request-counting pass")
    parser.add_argument("--latency-tasks", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=120.0)
    parser.add_argument("--pools", default="prefork,threads")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--transports", default=",".join(VARIANTS),
                        help="stock (kombu's polling defaults), stock-tuned (the kit's "
                             "polling options), kit")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.counted_tasks, args.latency_tasks, args.idle_seconds = 200, 100, 40, 21

    work = ROOT / ".build" / "bench"
    started = time.monotonic()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; N={args.tasks}, concurrency {args.concurrency}")
    results = []
    for pool in args.pools.split(","):
        for variant in args.transports.split(","):
            setting = Setting.of(variant, pool, args.concurrency)
            print(f"{setting.name}:", flush=True)
            figures = measure(setting, work / f"{variant}-{pool}", tasks=args.tasks,
                              counted_tasks=args.counted_tasks,
                              latency_tasks=args.latency_tasks, idle_seconds=args.idle_seconds,
                              log=lambda m: print(m, flush=True))
            results.append(figures.as_result())
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


def print_table(results: list[dict]) -> None:
    columns = [("transport", "transport", "{}"), ("polling", "polling", "{}"),
               ("pool", "pool", "{}"),
               ("tasks/s", "tasks_per_s", "{:.1f}"), ("req/task", "requests_per_task", "{:.2f}"),
               ("publish", "publish_requests_per_task", "{:.2f}"),
               ("consume", "consume_requests_per_task", "{:.2f}"),
               ("p50 ms", "latency_p50_ms", "{:.1f}"), ("p95 ms", "latency_p95_ms", "{:.1f}"),
               ("RSS MB", "rss_mb", "{:.0f}"), ("idle/q-h", "idle_requests_per_queue_hour", "{}")]
    rows = [[fmt.format(r[key]) for _h, key, fmt in columns] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _k, _f) in enumerate(columns)]
    print()
    print("  ".join(h.rjust(w) for (h, _k, _f), w in zip(columns, widths)))
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    print()
    for kit in (r for r in results if r["transport"] == "kit"):
        for stock in (r for r in results if r["transport"] == "stock"
                      and r["pool"] == kit["pool"]):
            print(f"kit/stock ({stock['polling']}), {kit['pool']}: "
                  f"{kit['tasks_per_s'] / stock['tasks_per_s']:.1f}x tasks/s")
    print()
    for r in results:
        actions = ", ".join(f"{a} {n:.3f}" for a, n in r["requests_by_action"].items())
        print(f"{r['transport']:>5}/{r['polling']:<14}/{r['pool']:<8} per task: {actions}")


if __name__ == "__main__":
    sys.exit(main())
