"""The result table throttled or unreachable while a real worker (bundled transport, both
pools) finishes a task, SQS and DynamoDB on moto, DynamoDB through a counting proxy that
throttles or never answers. Whatever happens to the result, the task runs once and its
message is acked; a throttle the retry policy outlasts still stores the result, and a
result given up is logged with the task id (``runtime.result_backend``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.counting_proxy import CountingProxy
from local_aws.fleet import create_result_table
from local_aws.ports import closed_port
from tests.integration.fleet import (lines, logged_at, publish, queue_counts,
                                     recording_fleet, wait_for)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

POOLS = ["prefork", "threads"]


@pytest.fixture
def proxy(moto):
    with CountingProxy(moto.endpoint_url) as counting:
        yield counting


@pytest.fixture
def fleet(moto, tmp_path):
    """``fleet(dynamodb_endpoint, extra_config="")``: a queue, a result table, a worker
    directory whose processes reach SQS on moto and DynamoDB at ``dynamodb_endpoint`` (and
    whose celeryconfig.py ends with ``extra_config``); one task published."""
    def make(dynamodb_endpoint: str, extra_config: str = ""):
        table = create_result_table(moto.endpoint_url, f"r{uuid.uuid4().hex[:10]}")
        sqs, queue, env, runs = recording_fleet(moto.endpoint_url, moto.endpoint_url, tmp_path,
                                                visibility=60, result_table=table,
                                                extra_config=extra_config)
        task_id = str(uuid.uuid4())
        publish(env, f"from ttasks import quick\nquick.apply_async(('once',), "
                     f"task_id='{task_id}')", tmp_path)
        worker_env = {**env, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint}
        return sqs, queue, worker_env, runs, task_id, lambda: state_of(env, task_id, tmp_path)
    return make


def state_of(env, task_id: str, cwd) -> str:
    """The task's state as a caller sees it (AsyncResult, reading the table directly)."""
    done = subprocess.run([sys.executable, "-c", f"from ttasks import app\n"
                           f"print(app.AsyncResult('{task_id}').state)"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


SHORT_BACKOFF = ("\nresult_backend_base_sleep_between_retries_ms = 10\n"
                 "result_backend_max_sleep_between_retries_ms = 50\n")
"""Celery's own retry settings, shortened: the same seven tries, without waiting seconds
between them (the black-holed case keeps the shipped settings and their bound)."""


@pytest.mark.parametrize("pool", POOLS)
def test_a_throttled_result_table_stores_the_result_after_retries_and_runs_the_task_once(
        pool, fleet, proxy, tmp_path):
    # Five throttles: more than botocore's own attempts (Celery's backend stored the task,
    # which succeeded, as a FAILURE then), fewer than the kit's seven tries.
    proxy.inject("PutItem", 5, 400, "ProvisionedThroughputExceededException")
    sqs, queue, env, runs, _task_id, state = fleet(proxy.endpoint_url,
                                                   extra_config=SHORT_BACKOFF)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool=pool, concurrency=2):
        wait_for(lambda: state() == "SUCCESS", 60, "the result to be stored")
    assert proxy.counts()["PutItem"] == 6
    assert lines(runs) == ["quick once"]
    assert queue_counts(sqs, queue["url"]) == (0, 0)


SHIPPED_BOUND = 7 * (2 + 3) + 17.5 + 2.5
"""Seconds from the task's receipt to the result given up, by the worker's own log: seven
tries of at most 2 s connecting + 3 s reading, at most 17.5 s of backoff, and the task."""


@pytest.mark.parametrize("pool, outage", [("prefork", "refused"), ("threads", "refused"),
                                          ("threads", "black-holed")])
def test_an_unreachable_result_table_costs_the_result_not_a_rerun(pool, outage, fleet, proxy,
                                                                  tmp_path):
    refused = contextlib.ExitStack()  # the closed port is held until the test ends
    if outage == "refused":
        endpoint = f"http://127.0.0.1:{refused.enter_context(closed_port())}"
    else:
        proxy.hang()
        endpoint = proxy.endpoint_url
    sqs, queue, env, runs, task_id, state = fleet(
        endpoint, extra_config=SHORT_BACKOFF if outage == "refused" else "")
    lost = f"task {task_id} ran, but its SUCCESS result could not be stored in DynamoDB table"
    worker = CeleryWorker("ttasks", env, tmp_path / "worker.log", pool=pool, concurrency=2)
    with refused, worker:
        wait_for(lambda: lost in worker.log_text(), 120, "the result to be given up")
        log = worker.log_text()
        if outage == "black-holed":
            took = logged_at(log, lost) - logged_at(log, f"[{task_id}] received")
            assert took < SHIPPED_BOUND, took
        # acked while the worker runs, not given back by its warm shutdown
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 30, "the ack")
    assert lines(runs) == ["quick once"]
    assert state() == "PENDING"
