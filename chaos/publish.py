"""The chaos run's publisher, a process of its own with the workers' Celery app.

``python -m chaos.publish tasks PLAN SENT FAILED --rate R``: publishes the plan
(JSON lines: id, seconds, countdown) in batches of ``CHUNK`` through
``runtime.publishing.batch_publish``, paced at R tasks a second; after each
batch it appends the ids SQS accepted to SENT and the others, with why, to
FAILED. A task counts as sent only when its publish returned without error.

``python -m chaos.publish unknown ID...``: one message per id for a task name no
worker knows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

CHUNK = 50
UNKNOWN_TASK = "chaos.no_such_task"


def publish_tasks(plan_path: str, sent_path: str, failed_path: str, rate: float) -> int:
    from chaostasks import app, work  # the worker directory is on sys.path

    from runtime.errors import PublishError
    from runtime.publishing import batch_publish

    with open(plan_path) as plan_file:
        plan = [json.loads(line) for line in plan_file]
    started = time.monotonic()
    with open(sent_path, "a") as sent, open(failed_path, "a") as failed:
        for first in range(0, len(plan), CHUNK):
            chunk = plan[first:first + CHUNK]
            refused: dict[str, str] = {}
            try:
                with batch_publish(app):
                    for task in chunk:
                        work.apply_async((task["seconds"],), task_id=task["id"],
                                         countdown=task["countdown"] or None)
            except PublishError as error:
                refused = dict(error.failed)
            except Exception as error:  # which of the chunk SQS took is unknown: none sent
                refused = {task["id"]: repr(error) for task in chunk}
            sent.write("".join(f"{t['id']}\n" for t in chunk if t["id"] not in refused))
            failed.write("".join(f"{i} {why}\n" for i, why in refused.items()))
            sent.flush()
            failed.flush()
            pause = started + (first + len(chunk)) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    return 0


def publish_unknown(ids: list[str]) -> int:
    from chaostasks import app
    for task_id in ids:
        app.send_task(UNKNOWN_TASK, args=(), task_id=task_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.publish", description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True)
    tasks = modes.add_parser("tasks")
    tasks.add_argument("plan")
    tasks.add_argument("sent")
    tasks.add_argument("failed")
    tasks.add_argument("--rate", type=float, required=True)
    unknown = modes.add_parser("unknown")
    unknown.add_argument("ids", nargs="+")
    args = parser.parse_args(argv)
    if args.mode == "tasks":
        return publish_tasks(args.plan, args.sent, args.failed, args.rate)
    return publish_unknown(args.ids)


if __name__ == "__main__":
    sys.exit(main())
