"""The bundled transport at the wire, on fauxqs, requests counted by a proxy
between the worker and the emulator (batched deletes flushed on SIGTERM, no
control-plane calls, idle cost, throttling, 5xx, AccessDenied, connection resets,
stalled answers and a long poll that never returns) or,
where a proxy would change the timing, by a hook in the worker's client (full
receive batches on a busy worker)."""

from __future__ import annotations

import time

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.counting_proxy import CountingProxy
from tests.integration.fleet import lines, publish, queue_counts, recording_fleet, wait_for

pytestmark = pytest.mark.integration

CONTROL_PLANE = {"ListQueues", "GetQueueUrl", "CreateQueue", "SetQueueAttributes",
                 "DeleteQueue", "PurgeQueue"}
"""Actions the worker roles are not granted. GetQueueAttributes is granted: a worker asks
it once per queue, before consuming (``runtime.queue_check``)."""


@pytest.fixture
def proxy(fauxqs):
    with CountingProxy(fauxqs.endpoint_url) as counting:
        yield counting


@pytest.fixture
def fleet(fauxqs, proxy, tmp_path):
    """Queues made directly; the worker (and publisher) go through the proxy."""
    return lambda **kw: recording_fleet(fauxqs.endpoint_url, proxy.endpoint_url, tmp_path, **kw)


@pytest.mark.fault
def test_acks_are_batched_and_the_rest_is_flushed_on_sigterm(fleet, proxy, tmp_path):
    sqs, queue, env, runs = fleet(visibility=60, extra_config=(
        "broker_transport_options['ack_flush_delay'] = 120\n"))  # only full batches, or shutdown
    publish(env, "from ttasks import quick\n[quick.delay(i) for i in range(25)]", tmp_path)
    worker = CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads",
                          concurrency=2).start()
    try:
        wait_for(lambda: len(lines(runs)) == 25, 30, "25 tasks to run")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 5), 10,
                 "two full batches deleted, five acks waiting")
    finally:
        assert worker.stop() == 0  # SIGTERM
    assert queue_counts(sqs, queue["url"]) == (0, 0)
    counts = proxy.counts()
    assert counts.get("DeleteMessageBatch") == 3
    assert "DeleteMessage" not in counts


RECEIVE_LOG = """
import os as _os
import runtime.transport as _transport
_receive = _transport.Channel._receive
def _logged(self, qname, q_url, count):
    messages = _receive(self, qname, q_url, count)
    with open(_os.environ["KIT_TEST_RUNS"] + ".receives", "a") as log:
        log.write(f"{len(messages)}\\n")
    return messages
_transport.Channel._receive = _logged
"""


def test_a_busy_worker_receives_full_batches(fauxqs, tmp_path):
    # Direct to fauxqs: stock's small receives show only when responses come back fast.
    _sqs, _queue, env, runs = recording_fleet(
        fauxqs.endpoint_url, fauxqs.endpoint_url, tmp_path, visibility=60,
        # a batch wait long enough that a slow machine cannot end a wait early
        extra_config=RECEIVE_LOG + "broker_transport_options['receive_batch_wait'] = 30\n")
    publish(env, "from ttasks import quick\n[quick.delay(i) for i in range(300)]", tmp_path)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="prefork", concurrency=2):
        wait_for(lambda: len(lines(runs)) == 300, 60, "300 tasks to run")
    batches = [int(n) for n in lines(tmp_path / "runs.txt.receives") if n != "0"]
    assert sum(batches) == 300
    assert batches.count(10) >= 29, batches  # prefetch window 20: a receive waits for 10 free


def test_a_worker_with_predefined_queues_makes_no_control_plane_call(fleet, proxy, tmp_path):
    _sqs, _queue, env, runs = fleet(visibility=60)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="prefork", concurrency=2):
        publish(env, "from ttasks import quick\n[quick.delay(i) for i in range(12)]", tmp_path)
        wait_for(lambda: len(lines(runs)) == 12, 30, "12 tasks to run")
    counts = proxy.counts()
    assert CONTROL_PLANE.isdisjoint(counts), counts
    assert counts.pop("GetQueueAttributes") == 1, counts  # the check before consuming
    assert set(counts) <= {"SendMessage", "ReceiveMessage", "DeleteMessageBatch",
                           "ChangeMessageVisibilityBatch"}, counts


def test_an_idle_worker_polls_once_per_wait_time(fleet, proxy, tmp_path):
    """One long poll per wait time (2 s here), the next sent as the last ends, no extra
    polling interval: at 20 s, 180 receives an hour. Read from when the receives reached
    the proxy: never two within a wait time (the emulator holds each for all of it), and
    as a rule the next right after (stock's 1 s polling interval makes every gap 3 s)."""
    _sqs, _queue, env, _runs = fleet(visibility=60, wait=2)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=1):
        proxy.reset()
        wait_for(lambda: len(proxy.arrivals("ReceiveMessage")) >= 6, 60, "six idle receives")
    arrivals = proxy.arrivals("ReceiveMessage")[:6]
    gaps = sorted(later - earlier for earlier, later in zip(arrivals, arrivals[1:]))
    assert gaps[0] >= 1.9, gaps  # each a long poll of the whole wait time
    assert gaps[len(gaps) // 2] < 2.9, gaps  # the median: no polling interval after it


@pytest.mark.fault
def test_throttled_and_failing_receives_are_retried_and_lose_nothing(fleet, proxy, tmp_path):
    _sqs, _queue, env, runs = fleet(visibility=60)
    publish(env, "from ttasks import quick\n[quick.delay(i) for i in range(10)]", tmp_path)
    proxy.inject("ReceiveMessage", 3, 400, "ThrottlingException")
    proxy.inject("ReceiveMessage", 2, 503, "ServiceUnavailable")
    proxy.inject("DeleteMessageBatch", 2, 400, "ThrottlingException")
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2):
        wait_for(lambda: len(lines(runs)) >= 10, 60, "all tasks despite the faults")
        time.sleep(1)
    assert sorted(lines(runs)) == sorted(f"quick {i}" for i in range(10))


@pytest.mark.fault
def test_resets_stalls_and_a_long_poll_that_never_answers_heal_without_a_restart(
        fleet, proxy, tmp_path):
    """Connections reset after SQS acted, an answer stalled past the read timeout, and a
    long poll that never returns: the worker recovers by itself and every task runs. A
    receive SQS applied but whose answer was lost costs its messages one visibility
    timeout; a delete applied but unanswered is retried harmlessly."""
    # Every request's read timeout is 4 s here, through the transport's own option
    # (client-config; the shipped 10 s are test_bad_queue_config's): the hung long poll
    # and the stalled delete cost 4 s each, not 16 s and 10 s. The 12 s stall still
    # outlasts the visibility window: extensions must not wait for it.
    sqs, queue, env, runs = fleet(visibility=10, extra_config=(
        "broker_transport_options['client-config'] = {'read_timeout': 4}\n"))
    publish(env, "from ttasks import quick\n[quick.delay(i) for i in range(20)]", tmp_path)
    proxy.inject_hang("ReceiveMessage", 1)
    proxy.inject_reset("ReceiveMessage", 2)
    proxy.inject_reset("DeleteMessageBatch", 1)
    proxy.inject_stall("DeleteMessageBatch", 1, 12)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2):
        wait_for(lambda: {f"quick {i}" for i in range(20)} <= set(lines(runs)), 90,
                 "every task despite the faults")
        wait_for(lambda: queue_counts(sqs, queue["url"]) == (0, 0), 60, "every delete")
    assert proxy.faulted() == {"hang": 1, "reset": 3, "stall": 1}
    assert sorted(set(lines(runs))) == sorted(f"quick {i}" for i in range(20))
    assert len(lines(runs)) == 20, "a duplicate run"


@pytest.mark.fault
def test_access_denied_on_publish_is_a_typed_error_naming_queue_and_fix(fleet, proxy, tmp_path):
    _sqs, queue_entry, env, _runs = fleet(visibility=60)
    proxy.inject("SendMessage", 1, 403, "AccessDenied")
    script = ("from ttasks import quick\n"
              "from runtime.errors import QueueAccessDenied\n"
              "try:\n    quick.delay(1)\n"
              "except QueueAccessDenied as error:\n    print(type(error).__name__, error)\n")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    queue = queue_entry["url"].rsplit("/", 1)[-1]
    assert out.startswith(f"QueueAccessDenied SendMessage on queue '{queue}' failed: AccessDenied")
    assert "role policy" in out


def test_batched_publishing_sends_ten_tasks_a_request_and_every_task_runs(fleet, proxy,
                                                                          tmp_path):
    sqs, queue, env, runs = fleet(visibility=60)
    publish(env, "from runtime.publishing import batch_publish\n"
                 "from ttasks import app, quick\n"
                 "with batch_publish(app):\n"
                 "    [quick.delay(i) for i in range(25)]\n", tmp_path)
    counts = proxy.counts()
    assert counts.get("SendMessageBatch") == 3 and "SendMessage" not in counts
    assert queue_counts(sqs, queue["url"]) == (25, 0)
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2):
        wait_for(lambda: len(lines(runs)) == 25, 30, "25 tasks to run")
    assert sorted(int(line.split()[1]) for line in lines(runs)) == list(range(25))
