"""``python -m bench``: stock kombu SQS vs the kit's bundled transport, in one run on
one fauxqs per pass; prints a table and writes bench/results.json.

Rows: each transport and pool publishing one task per request; the bundled
transport publishing in batches (``runtime.publishing``); and, with
``--delay-ms``, stock (tuned) and the kit consuming through a proxy that adds that
delay to every request, as real SQS's 5 to 20 ms would. Throughput is run
``--runs`` times per row, interleaved across a pool's rows, and reported as the
median and range."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.passes import BATCH, VARIANTS, Setting, measure
from runtime.celery_settings import BUNDLED_PREFETCH

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
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per row")
    parser.add_argument("--delay-ms", type=int, default=15,
                        help="request delay of the delayed rows (0: none)")
    parser.add_argument("--prefetch-multiplier", type=int, default=BUNDLED_PREFETCH,
                        help="worker_prefetch_multiplier for every row (the window is "
                             "concurrency x this)")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.counted_tasks, args.latency_tasks, args.idle_seconds = 200, 100, 40, 21
        args.runs = 1

    work = ROOT / ".build" / "bench"
    started = time.monotonic()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; N={args.tasks}, concurrency {args.concurrency}, "
          f"prefetch multiplier {args.prefetch_multiplier}")
    results = []
    for pool in args.pools.split(","):
        variants = args.transports.split(",")
        window = {"prefetch_multiplier": args.prefetch_multiplier}
        settings = [Setting.of(v, pool, args.concurrency, **window) for v in variants]
        settings += [Setting.of("kit", pool, args.concurrency, publish_mode=BATCH, **window)
                     for v in variants if v == "kit"]
        if args.delay_ms:
            settings += [Setting.of(v, pool, args.concurrency, request_delay_ms=args.delay_ms,
                                    **window)
                         for v in variants if v in ("stock-tuned", "kit")]
        print(f"{pool}: {', '.join(setting.name for setting in settings)}", flush=True)
        results += [figures.as_result() for figures in measure(
            settings, work / pool, tasks=args.tasks, counted_tasks=args.counted_tasks,
            latency_tasks=args.latency_tasks, idle_seconds=args.idle_seconds, runs=args.runs,
            log=lambda m: print(m, flush=True))]
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


def _cell(value: object, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _range(runs: list[float]) -> str:
    return f"{min(runs):.0f}-{max(runs):.0f}" if len(runs) > 1 else "-"


def print_table(results: list[dict]) -> None:
    columns = [("transport", "transport", "{}"), ("polling", "polling", "{}"),
               ("pool", "pool", "{}"), ("publish", "publish_mode", "{}"),
               ("+ms", "request_delay_ms", "{}"),
               ("tasks/s", "tasks_per_s", "{:.1f}"), ("range", "tasks_per_s_runs", None),
               ("req/task", "requests_per_task", "{:.2f}"),
               ("pub/task", "publish_requests_per_task", "{:.2f}"),
               ("cons/task", "consume_requests_per_task", "{:.2f}"),
               ("pub/s", "publish_per_s", "{:.0f}"),
               ("p50 ms", "latency_p50_ms", "{:.1f}"), ("p95 ms", "latency_p95_ms", "{:.1f}"),
               ("RSS MB", "rss_mb", "{:.0f}"), ("idle/q-h", "idle_requests_per_queue_hour", "{}")]
    rows = [[_range(r[key]) if fmt is None else _cell(r[key], fmt) for _h, key, fmt in columns]
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _k, _f) in enumerate(columns)]
    print()
    print("  ".join(h.rjust(w) for (h, _k, _f), w in zip(columns, widths)))
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    print()

    def rows_of(transport: str, pool: str, delay: int, mode: str = "single") -> list[dict]:
        return [r for r in results if r["transport"] == transport and r["pool"] == pool
                and r["request_delay_ms"] == delay and r["publish_mode"] == mode
                and r["tasks_per_s"]]
    for kit in (r for r in results if r["transport"] == "kit" and r["publish_mode"] == "single"):
        pool, delay = kit["pool"], kit["request_delay_ms"]
        for stock in rows_of("stock", pool, delay):
            print(f"kit/stock ({stock['polling']}), {pool}, +{delay} ms: "
                  f"{kit['tasks_per_s'] / stock['tasks_per_s']:.1f}x tasks/s (medians)")
        for base in rows_of("kit", pool, 0) if delay else []:
            print(f"kit at +{delay} ms / kit at +0 ms, {pool}: "
                  f"{kit['tasks_per_s'] / base['tasks_per_s']:.2f}")
    for batch in (r for r in results if r["publish_mode"] == "batch"):
        for single in rows_of("kit", batch["pool"], 0):
            print(f"batch/single publishing, {batch['pool']}: "
                  f"{batch['publish_per_s'] / single['publish_per_s']:.1f}x tasks/s published, "
                  f"{batch['requests_per_task']:.2f} requests per task end to end")
    print()
    for r in results:
        actions = ", ".join(f"{a} {n:.3f}" for a, n in r["requests_by_action"].items())
        print(f"{r['transport']:>5}/{r['polling']:<14}/{r['pool']:<8}/{r['publish_mode']:<6}"
              f"/+{r['request_delay_ms']} ms per task: {actions}")
    for r in results:
        if r.get("revocation_reads_per_worker_hour") is not None:  # rows with an idle pass
            print(f"revocation reads ({r['pool']}): {r['revocation_reads_per_task']:.4f} per task "
                  f"in the counted pass, {r['revocation_reads_per_worker_hour']} per worker-hour "
                  "idle (one Query of the live revocations per worker every 2 s, whatever "
                  "the task rate)")


if __name__ == "__main__":
    sys.exit(main())
