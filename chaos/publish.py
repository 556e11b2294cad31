"""The chaos run's publisher, a process of its own with the workers' Celery app.

``python -m chaos.publish tasks PLAN SENT FAILED --rate R``: publishes the plan
(JSON lines: id, seconds, countdown) in batches of ``CHUNK`` through
``runtime.publishing.batch_publish``, paced at R tasks a second. A task counts as
sent only when its publish returned without error. Those refused are published
again, as ``PublishError`` tells a producer to, with a backoff, for up to
``PATIENCE`` seconds per batch; each attempt appends the ids SQS accepted to SENT and the others
(``id round why``) to FAILED. A publish that raised may still have landed (its
answer was lost): publishing it again then queues a second copy, which the run
counts as a duplicate caused by the publisher's retry.

``python -m chaos.publish unknown ID...``: one message per id for a task name no
worker knows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

from runtime.errors import PublishError
from runtime.publishing import batch_publish

CHUNK = 50
PATIENCE = 180.0
"""Seconds a producer keeps publishing a refused batch again: longer than any of the
run's fault bursts, so every task is sent in the end unless SQS stays refusing."""
UNKNOWN_TASK = "chaos.no_such_task"


def publish_tasks(plan_path: str, sent_path: str, failed_path: str, rate: float) -> int:
    from chaostasks import app, work  # the worker directory is on sys.path

    with open(plan_path) as plan_file:
        plan = [json.loads(line) for line in plan_file]
    started = time.monotonic()
    with open(sent_path, "a") as sent, open(failed_path, "a") as failed:
        for first in range(0, len(plan), CHUNK):
            pending = plan[first:first + CHUNK]
            give_up = time.monotonic() + PATIENCE
            for attempt in itertools.count():
                if attempt:
                    time.sleep(min(0.5 * 2 ** attempt, 8.0))
                refused = _publish(app, work, pending)
                sent.write("".join(f"{t['id']}\n" for t in pending if t["id"] not in refused))
                failed.write("".join(f"{i} {attempt} {why}\n" for i, why in refused.items()))
                sent.flush()
                failed.flush()
                pending = [t for t in pending if t["id"] in refused]
                if not pending or time.monotonic() > give_up:
                    break
            pause = started + (first + CHUNK) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    return 0


def _publish(app: Any, work: Any, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """Publish ``tasks`` in one ``batch_publish`` block: the ids refused, with why."""
    try:
        with batch_publish(app):
            for task in tasks:
                work.apply_async((task["seconds"],), task_id=task["id"],
                                 countdown=task["countdown"] or None)
    except PublishError as error:
        return dict(error.failed)
    except Exception as error:  # which of them SQS took is unknown: none counts as sent
        return {task["id"]: repr(error).replace("\n", " ") for task in tasks}
    return {}


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
