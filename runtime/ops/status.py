"""``status``: how full each queue is, and whether it is the queue the config describes.

Depths come from GetQueueAttributes. SQS has no attribute for the age of the
oldest message; CloudWatch's ``ApproximateAgeOfOldestMessage`` (published each
minute for active queues) is read when the caller may and the endpoint has it,
else the age is ``n/a``. Receiving a message to look at its timestamp would
hide it from workers and count as a receive towards its DLQ, so it is never done.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import asdict, dataclass
from typing import Any

from runtime.config import QueueConfig, WorkerConfig
from runtime.ops import checks, queues
from runtime.ops.aws import AWS_FAILURES, Aws
from runtime.ops.output import duration, print_json, table
from runtime.sqs_errors import error_code

HELP = "per queue: visible, in flight, delayed, oldest, DLQ depth, config match"
DESCRIPTION = """\
Per queue of the config: messages visible, in flight (received, not yet deleted),
delayed; the age of the oldest message (CloudWatch's ApproximateAgeOfOldestMessage,
"n/a" where CloudWatch has no datapoint or is not reachable; no message is ever
received to find it); the DLQ's depth; and whether the deployed queue matches the
config (visibility timeout, receive wait time, redrive target and maxReceiveCount,
FIFO, KMS encryption). `doctor` explains each mismatch and its fix.

exit status: 0 every queue matches the config; 1 a queue does not; 2 usage or config
error; 3 AWS error (the line on stderr names what to fix)."""

AGE_METRIC = "ApproximateAgeOfOldestMessage"
LOOKBACK = datetime.timedelta(minutes=15)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("status", parents=[common], help=HELP, description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queues", nargs="*", metavar="QUEUE",
                        help="queues to show (default: every queue of the config)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: WorkerConfig) -> int:
    aws = Aws(config)
    chosen = [queues.resolve(config, name) for name in args.queues] or list(config.queues.values())
    report = [queue_status(aws, queue) for queue in chosen]
    if args.json:
        print_json({"source": config.source, "queues": [q.as_json() for q in report]})
    else:
        print(table(["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DLQ", "CONFIG"],
                    [[q.queue.name, q.depth.visible, q.depth.in_flight, q.depth.delayed,
                      duration(q.oldest_age), q.dead_letters, q.verdict()] for q in report]))
        mismatches = [m for q in report for m in q.mismatches]
        for mismatch in mismatches:
            print(f"  {mismatch.summary()}")
        if mismatches:
            print("  (python -m runtime.ops doctor gives the fix for each)")
    return 1 if any(q.mismatches for q in report) else 0


@dataclass(frozen=True)
class QueueStatus:
    queue: QueueConfig
    depth: queues.Depth
    oldest_age: float | None
    oldest_age_source: str
    dead_letters: int | None
    """Messages visible in the DLQ; ``None`` without one."""
    mismatches: list[checks.Mismatch]

    def verdict(self) -> str:
        if not self.mismatches:
            return "ok"
        names = ", ".join(m.field.removeprefix(f"queues.{self.queue.name}.")
                          for m in self.mismatches)
        plural = "es" if len(self.mismatches) > 1 else ""
        return f"{len(self.mismatches)} mismatch{plural} ({names})"

    def as_json(self) -> dict[str, Any]:
        return {"queue": self.queue.name, "url": self.queue.url, **asdict(self.depth),
                "oldest_age_seconds": self.oldest_age,
                "oldest_age_source": self.oldest_age_source,
                "dead_letters": self.dead_letters,
                "matches_config": not self.mismatches,
                "mismatches": [m.as_json() for m in self.mismatches]}


def queue_status(aws: Aws, queue: QueueConfig) -> QueueStatus:
    attributes = queues.attributes(aws, queue.url)
    found = checks.queue_mismatches(queue, attributes)
    dead_letters = None
    if queue.dead_letter_queue is not None:
        dlq_attributes = queues.attributes(aws, queue.dead_letter_queue.url)
        dead_letters = queues.Depth.of(dlq_attributes).visible
        found += checks.dead_letter_mismatches(queue, dlq_attributes)
    age, source = oldest_age(aws, queues.name_of(queue.url))
    return QueueStatus(queue=queue, depth=queues.Depth.of(attributes), oldest_age=age,
                       oldest_age_source=source, dead_letters=dead_letters, mismatches=found)


def oldest_age(aws: Aws, queue_name: str) -> tuple[float | None, str]:
    """(seconds, where the figure came from), or (``None``, why there is none)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        points = aws.once("cloudwatch").get_metric_statistics(
            Namespace="AWS/SQS", MetricName=AGE_METRIC,
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            # A minute past now: a datapoint stamped by a clock a little ahead still counts.
            StartTime=now - LOOKBACK, EndTime=now + datetime.timedelta(minutes=1), Period=60,
            Statistics=["Maximum"])["Datapoints"]
    except AWS_FAILURES as error:
        return None, f"n/a: CloudWatch GetMetricStatistics failed ({error_code(error)})"
    if not points:
        return None, "n/a: no CloudWatch datapoint in the last 15 minutes"
    latest = max(points, key=lambda point: point["Timestamp"])
    return float(latest["Maximum"]), f"CloudWatch at {latest['Timestamp'].isoformat()}"
