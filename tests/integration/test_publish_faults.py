"""Publishing while SQS is down, black-holed, failing for a while or losing answers:
``apply_async`` (and ``batch_publish``) in a real producer process with the rendered
configuration (bundled transport), SQS on fauxqs behind a counting proxy. A publish
either returns with the task queued or raises, within the documented bound, an error
naming the task that Celery callers already catch (``runtime.publishing``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from local_aws.counting_proxy import CountingProxy
from local_aws.fleet import create_queue, prepare_worker_dir, sqs_client, worker_document, \
    worker_env
from local_aws.ports import closed_port
from runtime.ops.messages import task_of
from tests.integration.fleet import RECORDING_TASKS, queue_counts

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PUBLISH = '''
import json, sys, time
from kombu.exceptions import OperationalError  # what Celery documents apply_async raises
from ttasks import quick
task_id, options = sys.argv[1], json.loads(sys.argv[2])
started = time.monotonic()
try:
    quick.apply_async(("p",), task_id=task_id, **options)
    outcome = {"raised": None}
except OperationalError as error:
    outcome = {"raised": type(error).__name__, "failed": getattr(error, "failed", None)}
outcome["seconds"] = time.monotonic() - started
print(json.dumps(outcome))
'''


@pytest.fixture
def proxy(fauxqs):
    with CountingProxy(fauxqs.endpoint_url) as counting:
        yield counting


@pytest.fixture
def queues(fauxqs, tmp_path):
    """A standard and a FIFO queue (fresh names) and a producer directory rendered for
    them with the bundled transport (``tmp_path``) and with stock (``tmp_path / "stock"``);
    ``publish(endpoint, transport="bundled", **apply_async options)`` runs one
    ``apply_async`` there."""
    sqs = sqs_client(fauxqs.endpoint_url)
    name = f"p{uuid.uuid4().hex[:10]}"
    made = {q: create_queue(sqs, q, visibility=60, wait=1) for q in (name, f"{name}.fifo")}
    dirs = {"bundled": tmp_path, "stock": tmp_path / "stock"}
    for transport, work in dirs.items():
        work.mkdir(exist_ok=True)
        prepare_worker_dir(work, worker_document(made, default_queue=name), transport=transport,
                           tasks_module="ttasks", tasks_source=RECORDING_TASKS)

    def publish(endpoint: str, transport: str = "bundled", **options) -> dict:
        task_id, work = str(uuid.uuid4()), dirs[transport]
        done = subprocess.run([sys.executable, "-c", PUBLISH, task_id, json.dumps(options)],
                              cwd=work, env=worker_env(work, endpoint),
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return {"task_id": task_id, **json.loads(done.stdout.splitlines()[-1])}
    return sqs, made[name], made[f"{name}.fifo"], publish


def test_with_the_endpoint_down_a_publish_raises_at_once_naming_the_task(queues):
    sqs, queue, _fifo, publish = queues
    with closed_port() as port:
        outcome = publish(f"http://127.0.0.1:{port}")
    assert outcome["raised"] == "PublishError"
    assert outcome["failed"] == {outcome["task_id"]: "EndpointConnectionError"}
    assert outcome["seconds"] < 5
    assert queue_counts(sqs, queue["url"]) == (0, 0)


def test_with_the_endpoint_black_holed_a_publish_raises_within_the_bound(queues, proxy):
    sqs, queue, _fifo, publish = queues
    proxy.hang()
    outcome = publish(proxy.endpoint_url)
    assert outcome["raised"] == "PublishError"
    assert outcome["failed"] == {
        outcome["task_id"]: "ReadTimeoutError: sent, no answer (SQS may have queued it)"}
    # four attempts of at most 5 s each, plus their backoff; kombu repeats none of them
    assert proxy.counts() == {"SendMessage": 4}
    assert outcome["seconds"] < 30
    assert queue_counts(sqs, queue["url"]) == (0, 0)


@pytest.mark.parametrize("transport, attempts, raised", [("bundled", 4, "PublishError"),
                                                          ("stock", 3, "OperationalError")])
def test_celery_does_not_repeat_the_client_s_attempts(queues, proxy, transport, attempts,
                                                      raised):
    """Every connection reset without an answer: the publish client's attempts, once.
    Celery's own publish retry (off in the rendered configuration) would run them all
    again after a network error."""
    *_queues, publish = queues
    proxy.inject_reset("SendMessage", 100)
    outcome = publish(proxy.endpoint_url, transport)
    assert outcome["raised"] == raised
    assert proxy.counts() == {"SendMessage": attempts}


@pytest.mark.parametrize("status, code", [(503, "ServiceUnavailable"),
                                          (400, "ThrottlingException")])
def test_a_failure_burst_shorter_than_the_attempts_queues_the_task_once(queues, proxy,
                                                                        status, code):
    sqs, queue, _fifo, publish = queues
    proxy.inject("SendMessage", 3, status, code)
    outcome = publish(proxy.endpoint_url)
    assert outcome["raised"] is None
    assert proxy.counts() == {"SendMessage": 4}
    assert queue_counts(sqs, queue["url"]) == (1, 0)


def test_a_failure_burst_longer_than_the_attempts_raises_naming_the_task(queues, proxy):
    sqs, queue, _fifo, publish = queues
    proxy.inject("SendMessage", 4, 503, "ServiceUnavailable")
    outcome = publish(proxy.endpoint_url)
    assert outcome["failed"] == {outcome["task_id"]: "ServiceUnavailable"}
    assert queue_counts(sqs, queue["url"]) == (0, 0)


def test_a_lost_answer_queues_a_standard_task_twice_and_a_fifo_task_once(queues, proxy):
    """The first attempt reaches SQS but its answer comes after the client's 5 s read
    timeout; the client's next attempt sends the task again. Documented: FIFO's
    deduplication id (task id and retry count) drops the copy, a standard queue
    cannot."""
    sqs, queue, fifo, publish = queues
    for target, options in ((queue, {}), (fifo, {"MessageGroupId": "g1"})):
        proxy.inject_stall("SendMessage", 1, 7)
        outcome = publish(proxy.endpoint_url, queue=target["url"].rsplit("/", 1)[-1],
                          **options)
        assert outcome["raised"] is None
    assert queue_counts(sqs, queue["url"]) == (2, 0)
    assert queue_counts(sqs, fifo["url"]) == (1, 0)


BATCH = '''
import json, sys
from runtime.errors import PublishError
from runtime.publishing import batch_publish
from ttasks import app, quick
ids = []
try:
    with batch_publish(app, flush_delay=3600):  # full batches only, and the rest at exit
        for i in range(25):
            ids.append(quick.delay(i).id)
            if i == 9:  # the first batch has been sent: the test takes SQS away now
                print("sent", flush=True)
                sys.stdin.readline()
    print(json.dumps({"ids": ids, "failed": {}}))
except PublishError as error:
    print(json.dumps({"ids": ids, "failed": error.failed}))
'''


def test_a_batch_publish_cut_off_mid_block_names_exactly_the_tasks_not_queued(queues, proxy,
                                                                            tmp_path):
    sqs, queue, _fifo, _publish = queues
    producer = subprocess.Popen([sys.executable, "-c", BATCH], cwd=tmp_path,
                                env=worker_env(tmp_path, proxy.endpoint_url), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert producer.stdout.readline().strip() == "sent"
        proxy.inject("SendMessageBatch", 100, 503, "ServiceUnavailable")
        out, _ = producer.communicate("go\n", timeout=60)
    finally:
        producer.kill()
    outcome = json.loads(out.splitlines()[-1])
    ids, failed = outcome["ids"], outcome["failed"]
    assert set(failed) == set(ids[10:])
    assert {failed[i] for i in ids[10:20]} == {"ServiceUnavailable"}
    assert {failed[i] for i in ids[20:]} == {
        "not sent: a batch call failed with ServiceUnavailable"}
    # one good call, then one call's four attempts; nothing for the last five
    assert proxy.counts() == {"SendMessageBatch": 5}
    assert sorted(queued_task_ids(sqs, queue["url"])) == sorted(ids[:10])


def queued_task_ids(sqs, url: str, *, delete: bool = False) -> list[str]:
    """The task ids a queue holds, in the order SQS delivers them; ``delete``: each batch
    deleted before the next receive (a FIFO group's next messages wait for it)."""
    ids: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                  VisibilityTimeout=60).get("Messages", [])
        if not got:
            return ids
        ids += [task_of(m["Body"])[1] for m in got]
        if delete:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])


FIFO_BATCH = '''
import json, sys
from runtime.publishing import batch_publish
from ttasks import app, quick
ids = []
with batch_publish(app, flush_delay=0.05):
    for i in range(25):
        ids.append(quick.apply_async((i,), queue=sys.argv[1], MessageGroupId="g").id)
        if i == 5:  # the timer sends these six: the test has SQS throttle that call
            print("six", flush=True)
            sys.stdin.readline()
print(json.dumps(ids))
'''


def test_a_throttled_batch_call_leaves_a_fifo_group_in_order(queues, proxy, tmp_path):
    """botocore backs off and retries the throttled call of the first six tasks while
    the producer fills the next batches: they wait for it, so SQS queues the group in
    the order it was published."""
    sqs, _queue, fifo, _publish = queues
    proxy.inject("SendMessageBatch", 1, 400, "ThrottlingException")
    producer = subprocess.Popen([sys.executable, "-c", FIFO_BATCH,
                                 fifo["url"].rsplit("/", 1)[-1]], cwd=tmp_path,
                                env=worker_env(tmp_path, proxy.endpoint_url), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert producer.stdout.readline().strip() == "six"
        deadline = time.monotonic() + 30
        while proxy.faulted().get("ThrottlingException") != 1:  # the timer's call, answered
            assert time.monotonic() < deadline, proxy.counts()
            time.sleep(0.01)
        out, _ = producer.communicate("go\n", timeout=60)
    finally:
        producer.kill()
    ids = json.loads(out.splitlines()[-1])
    assert queued_task_ids(sqs, fifo["url"], delete=True) == ids
