"""Queues made on an emulator the way the stack makes them (each with a DLQ and
redrive), a result table and a revocations table, the worker-config document that
describes them, a worker directory rendered from it, and the environment its processes
run with: shared by the integration tests and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3

from local_aws.celery_worker import role_environment
from local_aws.moto_server import REGION
from runtime.render import main as render_main
from runtime.schema import (REVOCATION_EXPIRES_ATTRIBUTE, REVOCATION_SHARD_ATTRIBUTE,
                            REVOCATION_TASK_ATTRIBUTE, REVOCATIONS_LIVE_INDEX, SCHEMA, VERSION)

EMULATOR_KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
"""Static keys for an emulator that does not check them; never real ones."""


def sqs_client(endpoint_url: str):
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=REGION,
                        aws_access_key_id=EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"])


def create_result_table(endpoint_url: str, name: str) -> str:
    """A result table keyed as the stack makes it (``id``, on demand); returns its name."""
    boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=REGION,
                 aws_access_key_id=EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"]).create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    return name


def create_revocation_table(endpoint_url: str | None, name: str) -> str:
    """A revocations table shaped as the stack makes it (``infra.constructs.RevocationTable``:
    keys, keys-only ``live`` index, TTL on ``expires``); returns its name."""
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=REGION,
                          aws_access_key_id=EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"])
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": REVOCATION_SHARD_ATTRIBUTE, "KeyType": "HASH"},
                   {"AttributeName": REVOCATION_TASK_ATTRIBUTE, "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": REVOCATION_SHARD_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": REVOCATION_TASK_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": REVOCATION_EXPIRES_ATTRIBUTE, "AttributeType": "N"}],
        LocalSecondaryIndexes=[{
            "IndexName": REVOCATIONS_LIVE_INDEX,
            "KeySchema": [{"AttributeName": REVOCATION_SHARD_ATTRIBUTE, "KeyType": "HASH"},
                          {"AttributeName": REVOCATION_EXPIRES_ATTRIBUTE, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": REVOCATION_EXPIRES_ATTRIBUTE})
    return name


def create_queue(sqs, name: str, *, visibility: int, wait: int, max_receive_count: int = 3,
                 task_time_limit: int | None = None) -> dict[str, Any]:
    """One queue and its DLQ; returns the queue's entry of the worker-config document.
    ``task_time_limit`` defaults to just under the visibility timeout."""
    fifo = name.endswith(".fifo")
    dlq_name = name.replace(".fifo", "-dlq.fifo") if fifo else f"{name}-dlq"
    attrs = {"FifoQueue": "true"} if fifo else {}
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=attrs)["QueueUrl"]
    dlq_arn = _arn(sqs, dlq_url)
    url = sqs.create_queue(QueueName=name, Attributes={
        **attrs, "VisibilityTimeout": str(visibility), "ReceiveMessageWaitTimeSeconds": str(wait),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": max_receive_count})})["QueueUrl"]
    return {"url": url, "arn": _arn(sqs, url), "fifo": fifo, "visibility_timeout": visibility,
            "wait_time_seconds": wait,
            "task_time_limit": task_time_limit or max(1, visibility - 1), "max_countdown": 0,
            "dead_letter_queue": {"url": dlq_url, "arn": dlq_arn,
                                  "max_receive_count": max_receive_count},
            "backoff_policy": {}, "backoff_tasks": [], "routes": []}


def _arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]


def worker_document(queues: dict[str, dict[str, Any]], *, default_queue: str,
                    result_table: str | None = None,
                    revocation_table: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA, "version": VERSION, "region": REGION,
                           "default_queue": default_queue, "queues": queues}
    if result_table:
        doc["result_backend"] = {"table": result_table, "ttl_seconds": 3600}
    if revocation_table:
        doc["revocations"] = {"table": revocation_table}
    return doc


def prepare_worker_dir(work: Path, document: dict[str, Any], *, transport: str,
                       tasks_module: str, tasks_source: str) -> None:
    """Write the document, render celeryconfig.py from it, and write the tasks module."""
    (work / "worker-config.json").write_text(json.dumps(document))
    if render_main(["--config", str(work / "worker-config.json"),
                    "--out", str(work / "celeryconfig.py"), "--transport", transport]) != 0:
        raise RuntimeError("rendering celeryconfig.py failed")
    (work / f"{tasks_module}.py").write_text(tasks_source)


def worker_env(work: Path, endpoint_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker or publisher run from ``work`` against an emulator."""
    return role_environment(work, {"AWS_ENDPOINT_URL": endpoint_url,
                                   "AWS_DEFAULT_REGION": REGION, **EMULATOR_KEYS, **extra})
