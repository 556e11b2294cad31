"""Issue 11, bad configuration: a real ``celery worker`` on the bundled transport given
a queue URL with no queue (fauxqs), the wrong region (moto: its queues are
region-scoped, fauxqs's are not) or an endpoint nothing listens on exits within
seconds with status 1 and one log line naming the queue, its URL and what to check,
instead of starting and polling in vain."""

from __future__ import annotations

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.counting_proxy import CountingProxy
from local_aws.ports import closed_port
from runtime.transport import BANNER
from tests.integration.fleet import lines, logged_at, publish, recording_fleet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault]

BOUND = 30.0
"""Seconds within which the worker must have given up, from its channel's opening."""


def start_failing(env, tmp_path) -> tuple[float, str]:
    """Start a worker that must not get ready; (seconds from its channel's opening to its
    giving up, by its own log, so the interpreter's start is not counted; its log)."""
    worker = CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads",
                          concurrency=1)
    try:
        with pytest.raises(RuntimeError, match="celery worker exited with 1"):
            worker.start(timeout=BOUND + 60)
        log = worker.log_text()
        return logged_at(log, "not consuming, the worker stops") - logged_at(log, BANNER), log
    finally:
        worker.stop()


def critical_line(log: str) -> str:
    (line,) = [text for text in log.splitlines()
               if "CRITICAL" in text and "not consuming, the worker stops" in text]
    return line


def test_a_queue_url_with_no_queue_stops_the_worker_naming_queue_and_url(fauxqs, tmp_path):
    sqs, queue, env, _runs = recording_fleet(fauxqs.endpoint_url, fauxqs.endpoint_url,
                                             tmp_path, visibility=30)
    sqs.delete_queue(QueueUrl=queue["url"])
    took, log = start_failing(env, tmp_path)
    line = critical_line(log)
    name = queue["url"].rsplit("/", 1)[1]
    assert f"GetQueueAttributes on queue {name!r} failed: " \
           "AWS.SimpleQueueService.NonExistentQueue" in line
    assert f"queue URL {queue['url']}" in line
    assert "no queue at that URL: check the region" in line
    assert took < BOUND, f"exited after {took:.1f} s"


def test_the_wrong_region_stops_the_worker_naming_queue_and_url(moto, tmp_path):
    _sqs, queue, env, _runs = recording_fleet(
        moto.endpoint_url, moto.endpoint_url, tmp_path, visibility=30,
        extra_config='\nbroker_transport_options["region"] = "eu-west-1"\n')
    took, log = start_failing(env, tmp_path)
    line = critical_line(log)
    assert "failed: AWS.SimpleQueueService.NonExistentQueue" in line
    assert f"queue URL {queue['url']}" in line and "check the region" in line
    assert took < BOUND, f"exited after {took:.1f} s"


def test_an_endpoint_nothing_listens_on_stops_the_worker_after_bounded_retries(
        fauxqs, tmp_path):
    _sqs, queue, env, _runs = recording_fleet(fauxqs.endpoint_url, fauxqs.endpoint_url,
                                              tmp_path, visibility=30)
    with closed_port() as port:
        closed = f"http://127.0.0.1:{port}"
        took, log = start_failing({**env, "AWS_ENDPOINT_URL": closed}, tmp_path)
    line = critical_line(log)
    assert "failed: EndpointConnectionError" in line
    assert f"queue URL {queue['url']}" in line and closed in line
    assert "check the region and the endpoint URL" in line
    assert took < BOUND, f"exited after {took:.1f} s"



def test_an_endpoint_that_never_answers_stops_the_worker_after_its_read_timeouts(
        fauxqs, tmp_path):
    _sqs, queue, env, _runs = recording_fleet(fauxqs.endpoint_url, fauxqs.endpoint_url,
                                              tmp_path, visibility=30)
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        proxy.hang()
        took, log = start_failing({**env, "AWS_ENDPOINT_URL": proxy.endpoint_url}, tmp_path)
    line = critical_line(log)
    assert "failed: ReadTimeoutError" in line and f"queue URL {queue['url']}" in line
    assert 30 <= took < 40, f"gave up after {took:.1f} s"  # three 10 s reads, then out


def test_a_worker_started_during_throttling_and_resets_waits_them_out_and_consumes(
        fauxqs, tmp_path):
    """Found by ``make chaos``: a replacement worker whose check met a burst of
    throttling (or 503s, or resets) exited 1, its log blaming its role policy. Such a
    blip says nothing about the configuration: the check asks again, then consumes."""
    _sqs, _queue, env, runs = recording_fleet(fauxqs.endpoint_url, fauxqs.endpoint_url,
                                              tmp_path, visibility=30)
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        proxy.inject("GetQueueAttributes", 3, 400, "ThrottlingException")
        proxy.inject("GetQueueAttributes", 3, 503, "ServiceUnavailable")
        proxy.inject_reset("GetQueueAttributes", 3)
        worker_env = {**env, "AWS_ENDPOINT_URL": proxy.endpoint_url}
        with CeleryWorker("ttasks", worker_env, tmp_path / "worker.log", pool="threads",
                          concurrency=1) as worker:
            publish(env, "from ttasks import quick\nquick.delay('after the blip')", tmp_path)
            wait_for(lambda: lines(runs) == ["quick after the blip"], 30, "the task to run")
            assert worker.running()
        assert proxy.faulted() == {"ThrottlingException": 3, "ServiceUnavailable": 3,
                                   "reset": 3}
