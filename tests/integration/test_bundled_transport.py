"""The bundled transport's promises, each shown with a real celery worker:
a long task is not redelivered, warm shutdown gives unstarted messages back at
once, poison and rejected messages reach the DLQ with their body and a reason."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from local_aws.celery_worker import CeleryWorker
from tests.integration.fleet import (create_queue, prepare_worker_dir, queue_counts, sqs_client,
                                     worker_document, worker_env)

pytestmark = pytest.mark.integration

TASKS = '''
import os, time
from celery import Celery
from celery.exceptions import Reject

app = Celery("ttasks")
app.config_from_object("celeryconfig")


def record(*fields):
    with open(os.environ["KIT_TEST_RUNS"], "a") as runs:
        runs.write(" ".join(map(str, fields)) + "\\n")


@app.task
def slow(tag, seconds):
    record("slow", tag)
    time.sleep(seconds)


@app.task
def quick(tag):
    record("quick", tag)


@app.task
def refuse(tag):
    record("refuse", tag)
    raise Reject(reason="not today", requeue=False)
'''


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def fleet(moto, tmp_path):
    """A fresh queue (unique name) and a worker directory for the bundled transport."""
    sqs = sqs_client(moto.endpoint_url)

    def make(visibility: int, wait: int = 1):
        name = f"t{uuid.uuid4().hex[:10]}"
        queue = create_queue(sqs, name, visibility=visibility, wait=wait)
        prepare_worker_dir(tmp_path, worker_document({name: queue}, default_queue=name),
                           transport="bundled", tasks_module="ttasks", tasks_source=TASKS)
        runs = tmp_path / "runs.txt"
        runs.touch()
        env = worker_env(tmp_path, moto.endpoint_url, KIT_TEST_RUNS=str(runs))
        return sqs, queue, env, runs

    return make


def publish(env, code: str, cwd) -> None:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def lines(runs) -> list[str]:
    return runs.read_text().splitlines()


def test_a_task_running_three_visibility_timeouts_runs_exactly_once(fleet, tmp_path):
    sqs, queue, env, runs = fleet(visibility=3)
    publish(env, "from ttasks import slow; slow.delay('long', 9)", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2):
        wait_for(lambda: "slow long" in lines(runs), 30, "the task to start")
        time.sleep(9 + 3 + 2)  # its run, plus another visibility window for a redelivery
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "the ack")
    assert lines(runs) == ["slow long"]


def test_warm_shutdown_gives_unstarted_messages_back_at_once(fleet, tmp_path):
    sqs, queue, env, runs = fleet(visibility=600)
    publish(env, "from ttasks import slow, quick\nslow.delay('first', 3)\n"
                 "[quick.delay(i) for i in range(4)]", tmp_path)
    worker = CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads",
                          concurrency=1).start()
    try:
        wait_for(lambda: "slow first" in lines(runs), 30, "the slow task to start")
        wait_for(lambda: queue_counts(sqs, queue["url"])[1] == 5, 10, "all five prefetched")
    finally:
        worker.stop()  # SIGTERM: warm shutdown, the running task finishes
    started = [line for line in lines(runs) if line.startswith("quick")]
    # the unstarted ones are visible right away, not after the 600 s timeout
    assert queue_counts(sqs, queue["url"]) == (4 - len(started), 0)
    assert "slow first" in lines(runs)


def dead_letters(sqs, queue) -> list[dict]:
    return sqs.receive_message(QueueUrl=queue["dead_letter_queue"]["url"],
                               MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                               WaitTimeSeconds=0).get("Messages", [])


def test_an_undecodable_message_moves_to_the_dlq_with_its_body_and_a_reason(fleet, tmp_path):
    sqs, queue, env, _runs = fleet(visibility=30)
    body = "{not json: a poison message"
    sqs.send_message(QueueUrl=queue["url"], MessageBody=body)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        (moved,) = wait_for(lambda: dead_letters(sqs, queue), 30, "the poison message in the DLQ")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "its deletion")
    assert moved["Body"] == body
    assert moved["MessageAttributes"]["kit_reason"]["StringValue"].startswith("undecodable")


def test_a_rejected_task_reaches_the_dlq_without_running_again(fleet, tmp_path):
    sqs, queue, env, runs = fleet(visibility=30)
    publish(env, "from ttasks import refuse; refuse.delay('r1')", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        (moved,) = wait_for(lambda: dead_letters(sqs, queue), 30, "the rejected task in the DLQ")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "its deletion")
        time.sleep(1)
    assert moved["MessageAttributes"]["kit_reason"]["StringValue"] == "rejected without requeue"
    # the body moved as it was sent (kombu base64-encodes it)
    assert json.loads(base64.b64decode(moved["Body"]))["headers"]["task"] == "ttasks.refuse"
    assert lines(runs) == ["refuse r1"]
