"""A valid worker configuration document, for tests to copy and break."""

from __future__ import annotations

import copy
from typing import Any

ACCOUNT = "123456789012"


def queue_entry(name: str, *, fifo: bool = False) -> dict[str, Any]:
    base = f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}"
    dlq_name = name.replace(".fifo", "-dlq.fifo") if fifo else f"{name}-dlq"
    return {
        "url": base,
        "arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}",
        "fifo": fifo,
        "visibility_timeout": 1800,
        "wait_time_seconds": 20,
        "task_time_limit": 1500,
        "max_countdown": 0,
        "dead_letter_queue": {
            "url": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{dlq_name}",
            "arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{dlq_name}",
            "max_receive_count": 5,
        },
        "backoff_policy": {},
        "backoff_tasks": [],
        "routes": [],
    }


def document() -> dict[str, Any]:
    celery = queue_entry("celery")
    celery["backoff_policy"] = {"1": 10, "2": 20}
    celery["backoff_tasks"] = ["app.tasks.flaky"]
    reports = queue_entry("reports")
    reports["routes"] = ["app.tasks.report*"]
    reports["task_time_limit"] = 900
    return copy.deepcopy({
        "schema": "celery-sqs-kit/worker-config",
        "version": 1,
        "region": "us-east-1",
        "default_queue": "celery",
        "queues": {"celery": celery, "reports": reports,
                   "orders.fifo": queue_entry("orders.fifo", fifo=True)},
        "result_backend": {"table": "results-table", "ttl_seconds": 86400},
        "revocations": {"table": "revocations-table"},
    })
