"""Malformed messages with a real ``celery worker`` (issue 19 item 3): a message the
transport cannot use, or one Celery fails on, goes to the DLQ with its reason, and the
worker keeps running the tasks after it. Before, a message whose ``headers`` was a list
stopped the worker (``Unrecoverable error: AttributeError``), and then every worker it
came back to."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from local_aws.celery_worker import CeleryWorker
from tests.integration.fleet import lines, publish, queue_counts, recording_fleet, wait_for
from tests.integration.test_bundled_transport import dead_letters

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def fleet(moto, tmp_path):
    return lambda **kw: recording_fleet(moto.endpoint_url, moto.endpoint_url, tmp_path, **kw)


def kombu_body(*, headers: object, task_body: bytes = b'[["bad"], {}, {}]') -> str:
    """An SQS body as kombu writes one for Celery, with the given ``headers``."""
    envelope = {"body": base64.b64encode(task_body).decode(),
                "content-type": "application/json", "content-encoding": "utf-8",
                "headers": headers,
                "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                               "delivery_info": {"exchange": "", "routing_key": "celery"}}}
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def reasons(moved: list[dict]) -> dict[str, str]:
    return {m["Body"]: m["MessageAttributes"]["kit_reason"]["StringValue"] for m in moved}


def test_a_message_whose_headers_are_a_list_goes_to_the_dlq_and_the_next_task_runs(
        fleet, tmp_path):
    sqs, queue, env, runs = fleet(visibility=30)
    bad = kombu_body(headers=["id", "task"])
    sqs.send_message(QueueUrl=queue["url"], MessageBody=bad)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads",
                      concurrency=1) as worker:
        moved = wait_for(lambda: dead_letters(sqs, queue), 30, "the bad message in the DLQ")
        publish(env, "from ttasks import quick; quick.delay('after')", tmp_path)
        wait_for(lambda: "quick after" in lines(runs), 30, "the good task to run")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "every deletion")
        assert worker.running(), worker.log_text()[-2000:]
        assert "Unrecoverable error" not in worker.log_text()
    assert reasons(moved) == {
        bad: "undecodable: not a kombu message (headers is an array, not an object)"}


def test_tasks_celery_fails_on_after_the_transport_s_checks_go_to_the_dlq(fleet, tmp_path):
    """Each passes the transport's checks; Celery then raises on the first (no ``id``: a
    KeyError in its Request, which would stop the worker) and cannot decode the second
    (a body that is not JSON: Celery acks such a message, which would lose it)."""
    sqs, queue, env, runs = fleet(visibility=30)
    no_id = kombu_body(headers={"task": "ttasks.quick", "eta": None, "expires": None})
    not_json = kombu_body(headers={"task": "ttasks.quick", "id": str(uuid.uuid4())},
                          task_body=b"{not json")
    for body in (no_id, not_json):
        sqs.send_message(QueueUrl=queue["url"], MessageBody=body)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads",
                      concurrency=1) as worker:
        moved = wait_for(lambda: len(found := dead_letters(sqs, queue)) == 2 and found, 30,
                         "both in the DLQ")
        publish(env, "from ttasks import quick; quick.delay('after')", tmp_path)
        wait_for(lambda: "quick after" in lines(runs), 30, "the good task to run")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "every deletion")
        assert worker.running(), worker.log_text()[-2000:]
    found = reasons(moved)
    assert found[no_id] == "its consumer failed on it: KeyError('id')"
    assert found[not_json].startswith("undecodable by its consumer: DecodeError(")
    assert lines(runs) == ["quick after"]
