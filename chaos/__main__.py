"""``python -m chaos``: publish N tasks to real workers while a seeded schedule breaks
things, drain, reconcile task by task, write bench/chaos.json and print a table.
Exits 1 if any sent task was lost."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from chaos.report import as_json, table
from chaos.run import ChaosConfig, run

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="names the fault schedule and the workload")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="worker slots, pools alternating prefork and threads")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--window", type=float, default=defaults.window,
                        help="seconds within which faults start")
    parser.add_argument("--publish-seconds", type=float, default=defaults.publish_seconds)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "chaos.json")
    parser.add_argument("--work", type=Path, default=ROOT / ".build" / "chaos",
                        help="logs of the run (workers, fauxqs, publisher, executions)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.workers < 1:
        parser.error("--tasks and --workers must be at least 1")
    config = ChaosConfig(tasks=args.tasks, seed=args.seed, workers=args.workers,
                         concurrency=args.concurrency, window=args.window,
                         publish_seconds=args.publish_seconds)
    command = "python -m chaos " + shlex.join(argv if argv is not None else sys.argv[1:])
    outcome = run(config, args.work.resolve(), log=lambda line: print(line, flush=True))
    report = as_json(outcome, command=command.strip(), date=time.strftime("%Y-%m-%d"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(report))
    print(f"\nwrote {args.out}; logs in {args.work}")
    return 1 if report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
