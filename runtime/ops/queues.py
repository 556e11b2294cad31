"""The queues a command is about: found in the config by name, read from SQS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runtime.config import DeadLetterConfig, QueueConfig, WorkerConfig
from runtime.errors import UsageError
from runtime.ops.aws import Aws, call


def name_of(url: str) -> str:
    """The SQS queue name at the end of a queue URL."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def resolve(config: WorkerConfig, name: str) -> QueueConfig:
    """A config queue by its own name, or by its DLQ's name, URL or ARN."""
    if name in config.queues:
        return config.queues[name]
    for queue in config.queues.values():
        dlq = queue.dead_letter_queue
        if dlq is not None and name in (name_of(dlq.url), dlq.url, dlq.arn):
            return queue
    raise UsageError(f"unknown queue {name!r}: {config.source} names "
                     f"{', '.join(sorted(config.queues))} (pass one, or its DLQ's name)")


def with_dead_letters(config: WorkerConfig, name: str) -> tuple[QueueConfig, DeadLetterConfig]:
    """The queue and its DLQ, for the ``dlq`` commands."""
    queue = resolve(config, name)
    if queue.dead_letter_queue is None:
        raise UsageError(f"queue {queue.name!r} has no dead-letter queue in {config.source}")
    return queue, queue.dead_letter_queue


def attributes(aws: Aws, url: str) -> dict[str, str]:
    """Every attribute SQS reports for the queue at ``url`` (one GetQueueAttributes)."""
    return call(name_of(url), "GetQueueAttributes", aws.client("sqs").get_queue_attributes,
                QueueUrl=url, AttributeNames=["All"])["Attributes"]


@dataclass(frozen=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int

    @classmethod
    def of(cls, attributes: Mapping[str, str]) -> Depth:
        return cls(visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
                   in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                   delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))


def depth(aws: Aws, url: str) -> Depth:
    return Depth.of(attributes(aws, url))
