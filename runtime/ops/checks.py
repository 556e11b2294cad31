"""Does a deployed queue match the emitted config? Pure comparisons, shared by
``status`` (a summary per queue) and ``doctor`` (each mismatch with its fix).

The document says what the stack meant to deploy; SQS's queue attributes say
what is there. They drift when a queue is changed by hand, when a stack is
updated but the config in use was rendered before, or when the config names
another stage's queues. Compared: visibility timeout, receive wait time, the
redrive target and its maxReceiveCount, the FIFO type, and encryption (the
stack encrypts every queue and DLQ with its customer-managed KMS key; the
document names no key, so any KMS key counts as a match).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.config import QueueConfig

REDEPLOY = "redeploy the stack or re-render the config"
OTHER_QUEUE = ("a queue cannot change type: the config names another queue than the one "
               "deployed; re-render the config from the stack's outputs")
ENCRYPT = ("the stack encrypts every queue with its KMS key: redeploy the stack "
           "(was the queue changed by hand?)")
EXPECTED_ENCRYPTION = "KMS"


@dataclass(frozen=True)
class Mismatch:
    field: str
    """The document's path of the setting: ``queues.reports.visibility_timeout``."""
    deployed: object
    config: object
    fix: str

    def summary(self) -> str:
        return f"{self.field}: deployed {_shown(self.deployed)}, config {_shown(self.config)}"

    def line(self) -> str:
        """The summary and the fix: ``queues.reports.visibility_timeout: deployed 30,
        config 1800: redeploy the stack or re-render the config``."""
        return f"{self.summary()}: {self.fix}"

    def as_json(self) -> dict[str, object]:
        return {"field": self.field, "deployed": self.deployed, "config": self.config,
                "fix": self.fix}


def _shown(value: object) -> str:
    """As the document writes it: ``true``, not ``True``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def encryption(attributes: Mapping[str, str]) -> str:
    """``KMS``, ``SSE-SQS`` (SQS-managed keys) or ``none``."""
    if attributes.get("KmsMasterKeyId"):
        return "KMS"
    return "SSE-SQS" if attributes.get("SqsManagedSseEnabled") == "true" else "none"


def redrive_policy(attributes: Mapping[str, str]) -> tuple[str | None, int | None]:
    """(dead-letter target ARN, maxReceiveCount), or ``(None, None)`` without a policy."""
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return None, None
    policy = json.loads(raw)
    count = policy.get("maxReceiveCount")
    return policy.get("deadLetterTargetArn"), None if count is None else int(count)


def queue_mismatches(queue: QueueConfig, attributes: Mapping[str, str]) -> list[Mismatch]:
    """Every setting of ``queue``'s deployed ``attributes`` that differs from the config,
    in the document's order."""
    where = f"queues.{queue.name}"
    found = _type(where, queue.fifo, attributes)
    for field, key, expected in (("visibility_timeout", "VisibilityTimeout",
                                  queue.visibility_timeout),
                                 ("wait_time_seconds", "ReceiveMessageWaitTimeSeconds",
                                  queue.wait_time_seconds)):
        deployed = int(attributes.get(key, 0))
        if deployed != expected:
            found.append(Mismatch(f"{where}.{field}", deployed, expected, REDEPLOY))
    return found + _redrive(where, queue, attributes) + _encryption(where, attributes)


def dead_letter_mismatches(queue: QueueConfig,
                           attributes: Mapping[str, str]) -> list[Mismatch]:
    """The DLQ must have its queue's type and be encrypted like it."""
    where = f"queues.{queue.name}.dead_letter_queue"
    return _type(where, queue.fifo, attributes) + _encryption(where, attributes)


def _redrive(where: str, queue: QueueConfig, attributes: Mapping[str, str]) -> list[Mismatch]:
    target, count = redrive_policy(attributes)
    dlq = queue.dead_letter_queue
    if dlq is None:
        return [] if target is None else [
            Mismatch(f"{where}.dead_letter_queue", target, "none", REDEPLOY)]
    found = []
    if target != dlq.arn:
        found.append(Mismatch(f"{where}.dead_letter_queue.arn", target or "none", dlq.arn,
                              REDEPLOY))
    if target is not None and count != dlq.max_receive_count:
        found.append(Mismatch(f"{where}.dead_letter_queue.max_receive_count", count,
                              dlq.max_receive_count, REDEPLOY))
    return found


def _type(where: str, fifo: bool, attributes: Mapping[str, str]) -> list[Mismatch]:
    deployed = attributes.get("FifoQueue") == "true"
    return [] if deployed == fifo else [Mismatch(f"{where}.fifo", deployed, fifo, OTHER_QUEUE)]


def _encryption(where: str, attributes: Mapping[str, str]) -> list[Mismatch]:
    deployed = encryption(attributes)
    return [] if deployed == EXPECTED_ENCRYPTION else [
        Mismatch(f"{where}.encryption", deployed, EXPECTED_ENCRYPTION, ENCRYPT)]
