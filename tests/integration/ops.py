"""Fleets for the operator CLI's tests: queues made as the stack makes them (KMS on
both), dead letters made by the transport's own lane, and the CLI run as a process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_aws.fleet import create_queue, sqs_client, worker_document, worker_env
from local_aws.server_process import PROJECT_ROOT
from runtime.lane import QueueLane
from runtime.ops.messages import task_of

REASON = "rejected without requeue"
KMS_KEY = "alias/aws/sqs"


@dataclass
class OpsFleet:
    sqs: Any
    name: str
    queue: dict[str, Any]
    config: Path
    env: dict[str, str]

    @property
    def dlq_url(self) -> str:
        return self.queue["dead_letter_queue"]["url"]

    def ops(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``python -m runtime.ops ARGS --config ...`` as a process of its own."""
        return subprocess.run([sys.executable, "-m", "runtime.ops", *args,
                               "--config", str(self.config)], cwd=PROJECT_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def depth(self, url: str) -> tuple[int, int]:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attributes["ApproximateNumberOfMessages"]),
                int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def make_fleet(endpoint_url: str, work: Path, *, fifo: bool = False, visibility: int = 30,
               config_changes: dict[str, Any] | None = None) -> OpsFleet:
    """A fresh queue and DLQ, KMS-encrypted like the stack's, with its config document."""
    sqs = sqs_client(endpoint_url)
    name = f"o{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
    queue = create_queue(sqs, name, visibility=visibility, wait=1)
    for url in (queue["url"], queue["dead_letter_queue"]["url"]):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"KmsMasterKeyId": KMS_KEY})
    entry = {**queue, **(config_changes or {})}
    work.mkdir(parents=True, exist_ok=True)
    config = work / "worker-config.json"
    config.write_text(json.dumps(worker_document({name: entry}, default_queue=name)))
    return OpsFleet(sqs, name, queue, config, worker_env(work, endpoint_url))


def task_body(task_id: str, task: str = "ttasks.refuse") -> str:
    """A Celery task message as kombu's SQS transport writes it: base64 of the envelope."""
    payload = base64.b64encode(json.dumps([[task_id], {}, {}]).encode()).decode()
    envelope = {"body": payload, "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"lang": "py", "task": task, "id": task_id, "retries": 0},
                "properties": {"correlation_id": task_id, "body_encoding": "base64",
                               "delivery_info": {"exchange": "", "routing_key": "q"}}}
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def publish(fleet: OpsFleet, task_ids: list[str], *, groups: int = 2) -> None:
    url = fleet.queue["url"]
    for start in range(0, len(task_ids), 10):
        entries = []
        for i, task_id in enumerate(task_ids[start:start + 10]):
            entry = {"Id": str(i), "MessageBody": task_body(task_id),
                     "MessageAttributes": {"tenant": {"DataType": "String",
                                                      "StringValue": "acme"}}}
            if fleet.queue["fifo"]:
                entry["MessageGroupId"] = f"g{(start + i) % groups}"
                entry["MessageDeduplicationId"] = task_id
            entries.append(entry)
        fleet.sqs.send_message_batch(QueueUrl=url, Entries=entries)


def dead_letter_all(fleet: OpsFleet, expected: int) -> None:
    """Receive every message of the queue and dead-letter it through the transport's lane,
    as a worker does with a task rejected without requeue (a lane per batch, closed when
    its moves and deletes are done, so a FIFO group's next messages can be received)."""
    moved = 0
    while moved < expected:
        batch = fleet.sqs.receive_message(
            QueueUrl=fleet.queue["url"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            raise AssertionError(f"only {moved} of {expected} messages could be received")
        lane = QueueLane(queue=fleet.name, url=fleet.queue["url"],
                         visibility_timeout=fleet.queue["visibility_timeout"],
                         client=lambda _profile: fleet.sqs, dead_letter_url=fleet.dlq_url,
                         heartbeat=False)
        lane.hold(m["ReceiptHandle"] for m in batch)
        for message in batch:
            lane.dead_letter(message, REASON)
        lane.close(10)
        moved += len(batch)


def make_dead_letters(fleet: OpsFleet, count: int, prefix: str = "t") -> list[str]:
    task_ids = [f"{prefix}-{i:03d}" for i in range(count)]
    publish(fleet, task_ids)
    dead_letter_all(fleet, count)
    return task_ids


def drain(fleet: OpsFleet, url: str) -> list[dict[str, Any]]:
    """Every message of the queue at ``url``, consumed (the test is its only consumer)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = fleet.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return messages
        messages += batch
        fleet.sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def task_ids(messages: list[dict[str, Any]]) -> list[str]:
    return [task_of(m["Body"])[1] for m in messages]
