"""The bundled transport's promises, each shown with a real celery worker:
a long task is not redelivered, warm shutdown gives unstarted messages back at
once, poison, unknown, refused and rejected messages reach the DLQ with their body
and a reason."""

from __future__ import annotations

import base64
import json
import time

import pytest

from local_aws.celery_worker import CeleryWorker
from tests.integration.fleet import lines, publish, queue_counts, recording_fleet, wait_for

pytestmark = pytest.mark.integration

@pytest.fixture
def fleet(moto, tmp_path):
    return lambda **kw: recording_fleet(moto.endpoint_url, moto.endpoint_url, tmp_path, **kw)


@pytest.mark.fault
def test_a_task_running_three_visibility_timeouts_runs_exactly_once(fleet, tmp_path):
    sqs, queue, env, runs = fleet(visibility=3)
    publish(env, "from ttasks import slow; slow.delay('long', 9)", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2):
        wait_for(lambda: "slow long" in lines(runs), 30, "the task to start")
        # Held (0, 1) for the whole run: a copy redelivered meanwhile would run on the
        # second thread (another line) and stay in flight; deleted only after both end.
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 60,
                 "the task to end and its ack to land")
    assert lines(runs) == ["slow long"]


@pytest.mark.fault
def test_sigterm_with_running_prefetched_and_eta_tasks_loses_and_repeats_none(fleet, tmp_path):
    """The running task finishes, the prefetched and ETA ones go back at once (not after
    the 600 s visibility timeout), and a second worker runs each of them exactly once,
    the ETA one no earlier than its ETA."""
    sqs, queue, env, runs = fleet(visibility=600)
    publish(env, "from ttasks import slow, quick\nslow.delay('first', 3)\n"
                 "[quick.delay(i) for i in range(4)]\n"
                 "quick.apply_async(('eta',), countdown=8)", tmp_path)
    published = time.time()
    worker = CeleryWorker("ttasks", env, tmp_path / "first.log", pool="threads",
                          concurrency=1).start()
    try:
        wait_for(lambda: "slow first" in lines(runs), 30, "the slow task to start")
        wait_for(lambda: queue_counts(sqs, queue["url"])[1] == 6, 10, "all six held")
    finally:
        worker.stop()  # SIGTERM: warm shutdown
    assert "slow first" in lines(runs)
    assert queue_counts(sqs, queue["url"])[1] == 0  # nothing left invisible
    with CeleryWorker("ttasks", env, tmp_path / "second.log", pool="threads", concurrency=1):
        wait_for(lambda: len(lines(runs)) >= 6, 30, "the rest to run")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "every ack")
    assert sorted(lines(runs)) == sorted(["slow first", "quick eta"] +
                                         [f"quick {i}" for i in range(4)])
    assert time.time() - published >= 8


def dead_letters(sqs, queue) -> list[dict]:
    """The DLQ's messages, left visible (a poll that finds some does not hide them)."""
    return sqs.receive_message(QueueUrl=queue["dead_letter_queue"]["url"],
                               MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                               VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])


@pytest.mark.fault
def test_an_undecodable_message_moves_to_the_dlq_with_its_body_and_a_reason(fleet, tmp_path):
    sqs, queue, env, _runs = fleet(visibility=30)
    body = "{not json: a poison message"
    sqs.send_message(QueueUrl=queue["url"], MessageBody=body)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        (moved,) = wait_for(lambda: dead_letters(sqs, queue), 30, "the poison message in the DLQ")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "its deletion")
    assert moved["Body"] == body
    assert moved["MessageAttributes"]["kit_reason"]["StringValue"].startswith("undecodable")


@pytest.mark.fault
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


@pytest.mark.fault
def test_an_unknown_task_and_a_refused_content_type_reach_the_dlq_and_the_rest_runs(
        fleet, tmp_path):
    """Celery rejects both (an unregistered task name; pickle where only JSON is
    accepted): each lands in the DLQ as sent, none is lost, the worker goes on."""
    sqs, queue, env, runs = fleet(visibility=30)
    publish(env, "from ttasks import app, quick\n"
                 "app.send_task('ttasks.nope', ('x',))\n"
                 "quick.apply_async(('pickled',), serializer='pickle')\n"
                 "quick.delay('fine')\n", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        moved = wait_for(lambda: len(found := dead_letters(sqs, queue)) == 2 and found, 30,
                         "both in the DLQ")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 10, "their deletion")
    assert lines(runs) == ["quick fine"]
    bodies = [json.loads(base64.b64decode(m["Body"])) for m in moved]
    assert sorted((b["headers"]["task"], b["content-type"]) for b in bodies) == [
        ("ttasks.nope", "application/json"), ("ttasks.quick", "application/x-python-serialize")]
    assert {m["MessageAttributes"]["kit_reason"]["StringValue"] for m in moved} == {
        "rejected without requeue"}


def test_the_bundled_transport_needs_no_pycurl(fleet, tmp_path):
    _sqs, queue, env, runs = fleet(visibility=30)
    blocker = tmp_path / "no_pycurl"
    blocker.mkdir()
    (blocker / "pycurl.py").write_text("raise ImportError('pycurl is blocked in this test')\n")
    env = {**env, "PYTHONPATH": f"{blocker}:{env['PYTHONPATH']}"}
    publish(env, "from ttasks import quick; quick.delay('no-curl')", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        wait_for(lambda: "quick no-curl" in lines(runs), 30, "the task to run without pycurl")
