"""runtime.batching: acks become DeleteMessageBatch calls; nothing is dropped silently."""

from __future__ import annotations

import logging
import threading
import time

from botocore.exceptions import ClientError

from runtime.batching import DeleteBatcher
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


def batcher(stub: StubSqs, delay: float = 3600.0) -> DeleteBatcher:
    return DeleteBatcher(lambda _queue: stub, flush_delay=delay)


def test_receipts_are_sent_ten_at_a_time():
    stub = StubSqs()
    b = batcher(stub)
    for i in range(25):
        b.add("work", URL, f"r{i}")
    b.close()
    sizes = [len(kwargs["Entries"]) for _action, kwargs in stub.calls]
    assert sorted(sizes) == [5, 10, 10]
    handles = [e["ReceiptHandle"] for _a, kw in stub.calls for e in kw["Entries"]]
    assert sorted(handles) == sorted(f"r{i}" for i in range(25))
    assert b.deleted == 25


def test_each_batch_targets_one_queue():
    stub = StubSqs()
    b = batcher(stub)
    b.add("work", URL, "a")
    b.add("other", URL + "-other", "b")
    b.close()
    assert sorted(kw["QueueUrl"] for _a, kw in stub.calls) == [URL, URL + "-other"]


def test_pending_receipts_are_flushed_after_the_delay_without_shutdown():
    sent = threading.Event()
    stub = StubSqs(lambda _a, _kw: sent.set() or {})
    b = batcher(stub, delay=0.05)
    b.add("work", URL, "only")
    assert sent.wait(timeout=10)
    b.close()
    assert stub.actions() == ["DeleteMessageBatch"]


def test_a_server_side_entry_failure_is_retried():
    answers = iter([{"Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}]}, {}])
    stub = StubSqs(lambda _a, _kw: next(answers))
    b = batcher(stub)
    b.add("work", URL, "ok")
    b.add("work", URL, "retry-me")
    b.close()
    assert [e["ReceiptHandle"] for e in stub.calls[1][1]["Entries"]] == ["retry-me"]
    assert b.deleted == 2


def test_a_sender_fault_is_logged_with_queue_and_code_not_retried(caplog):
    stub = StubSqs(lambda _a, _kw: {"Failed": [
        {"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]})
    b = batcher(stub)
    b.add("work", URL, "stale")
    with caplog.at_level(logging.WARNING):
        b.close()
    assert len(stub.calls) == 1
    assert "queue 'work' (ReceiptHandleIsInvalid)" in caplog.text
    assert "deliver them again" in caplog.text


def test_throttling_is_retried_then_succeeds():
    answers = iter(["throttle", {}])

    def respond(_action, _kwargs):
        answer = next(answers)
        if answer == "throttle":
            raise ClientError({"Error": {"Code": "RequestThrottled"}}, "DeleteMessageBatch")
        return answer

    stub = StubSqs(respond)
    b = batcher(stub)
    b.add("work", URL, "r")
    b.close()
    assert len(stub.calls) == 2
    assert b.deleted == 1


def test_access_denied_is_not_retried_and_is_logged(caplog):
    def respond(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied"}}, "DeleteMessageBatch")

    stub = StubSqs(respond)
    b = batcher(stub)
    b.add("work", URL, "r")
    with caplog.at_level(logging.WARNING):
        b.close()
    assert len(stub.calls) == 1
    assert "AccessDenied" in caplog.text


def test_a_full_batch_goes_at_once_and_the_remainder_waits_for_its_delay():
    stub = StubSqs()
    b = batcher(stub, delay=3600.0)
    for i in range(13):
        b.add("work", URL, f"r{i}")  # the tenth wakes the flusher, long before the delay
    deadline = time.monotonic() + 10
    while not stub.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time enough for a wrongly eager flusher to send the other three
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10]
    b.close()  # shutdown sends the remainder
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10, 3]
