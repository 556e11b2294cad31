"""Test fleets: a recording tasks module, a queue with its worker directory, and
the helpers the worker tests share (queues, documents, clients and environments:
``local_aws.fleet``)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from local_aws.fleet import (create_queue, prepare_worker_dir, sqs_client, worker_document,
                             worker_env)


def queue_counts(sqs, url: str) -> tuple[int, int]:
    """(visible, in flight) as SQS reports them."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), \
        int(attrs["ApproximateNumberOfMessagesNotVisible"])


RECORDING_TASKS = '''
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


def logged_at(log: str, text: str) -> float:
    """When (seconds since the epoch, by the worker's own clock) a worker logged the first
    line with ``text``: Celery's ``[%(asctime)s: ...]`` prefix. Durations read from two
    such lines leave out the interpreter's start and the test's polling."""
    line = next(line for line in log.splitlines() if text in line and line.startswith("["))
    return datetime.strptime(line[1:line.index(":", 18)], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def publish(env, code: str, cwd) -> None:
    """Run ``code`` (which sends tasks) in a process with the worker's environment."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def lines(runs) -> list[str]:
    return runs.read_text().splitlines()


def recording_fleet(setup_endpoint: str, worker_endpoint: str, work: Path, *, visibility: int,
                    wait: int = 1, transport: str = "bundled", extra_config: str = "",
                    result_table: str | None = None):
    """A fresh queue (unique name) with its DLQ, made through ``setup_endpoint``, and a
    worker directory whose processes talk to ``worker_endpoint`` (results to
    ``result_table``, if given). Returns ``(sqs client, queue entry, worker env, runs
    file)``; tasks record to the runs file."""
    import uuid

    sqs = sqs_client(setup_endpoint)
    name = f"t{uuid.uuid4().hex[:10]}"
    queue = create_queue(sqs, name, visibility=visibility, wait=wait)
    prepare_worker_dir(work, worker_document({name: queue}, default_queue=name,
                                             result_table=result_table),
                       transport=transport, tasks_module="ttasks", tasks_source=RECORDING_TASKS)
    if extra_config:
        with open(work / "celeryconfig.py", "a") as config:
            config.write(extra_config)
    runs = work / "runs.txt"
    runs.touch()
    return sqs, queue, worker_env(work, worker_endpoint, KIT_TEST_RUNS=str(runs)), runs
