"""runtime.publishing: tasks published inside ``batch_publish`` go out as
SendMessageBatch calls, and the block ends only when SQS accepted every one."""

from __future__ import annotations

import pickle
import threading

import pytest
from botocore.exceptions import (CredentialRetrievalError, EndpointConnectionError,
                                 NoCredentialsError, ParamValidationError, ReadTimeoutError)
from kombu.exceptions import OperationalError

from runtime.errors import ConfigError, CredentialsError, PublishError, QueueAccessDenied
from runtime.publishing import MAX_BATCH_BYTES, BatchPublisher, batch_publish, publish_error
from tests.unit.fake_aws import aws_error
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


def request(i: int, body: str = "x", **extra) -> dict:
    return {"QueueUrl": URL, "MessageBody": f"{body}{i}", **extra}


def publisher(**kwargs) -> BatchPublisher:
    return BatchPublisher(flush_delay=3600, **kwargs)  # only size, count and close send


def test_messages_go_ten_to_a_batch_and_the_rest_at_close():
    stub = StubSqs()
    p = publisher()
    for i in range(25):
        p.add(stub, request(i), f"t{i}")
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10, 10]  # sent as they filled
    p.close()
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10, 10, 5]
    assert stub.actions() == ["SendMessageBatch"] * 3
    assert p.sent == 25


def test_each_message_keeps_its_own_fifo_ids_and_attributes():
    stub = StubSqs()
    p = publisher()
    p.add(stub, request(1, MessageGroupId="g1", MessageDeduplicationId="d1"), "t1")
    p.add(stub, request(2, MessageGroupId="g2", MessageDeduplicationId="d2",
                        MessageAttributes={"a": {"DataType": "String", "StringValue": "v"}}),
          "t2")
    p.close()
    (_action, kwargs), = stub.calls
    assert kwargs["Entries"] == [
        {"Id": "0", "MessageBody": "x1", "MessageGroupId": "g1", "MessageDeduplicationId": "d1"},
        {"Id": "1", "MessageBody": "x2", "MessageGroupId": "g2", "MessageDeduplicationId": "d2",
         "MessageAttributes": {"a": {"DataType": "String", "StringValue": "v"}}}]


def test_a_batch_never_passes_the_payload_cap():
    stub = StubSqs()
    p = publisher()
    big = "b" * (MAX_BATCH_BYTES // 3)
    for i in range(4):
        p.add(stub, request(i, body=big), f"t{i}")
    p.close()
    sizes = [sum(len(e["MessageBody"]) for e in kw["Entries"]) for _a, kw in stub.calls]
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [2, 2]
    assert all(size <= MAX_BATCH_BYTES for size in sizes)


def test_a_batch_takes_up_to_sqs_s_1_mib_whatever_each_message_s_size():
    """Since 2025 SQS takes 1 MiB in a batch: three messages of 300 KB (each within its
    queue's limit, which the transport checked) go in one call, not three."""
    stub = StubSqs()
    p = publisher()
    for i in range(4):
        p.add(stub, request(i, body="b" * 300_000), f"t{i}")
    p.close()
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [3, 1]


def test_partial_failures_are_retried_or_named_and_the_close_raises():
    answers = iter([
        {"Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "2", "SenderFault": True, "Code": "InvalidMessageContents"}]},
        {}])
    stub = StubSqs(lambda _a, _kw: next(answers))
    p = publisher()
    for i in range(3):
        p.add(stub, request(i), f"t{i}")
    with pytest.raises(PublishError) as raised:
        p.close()
    assert raised.value.failed == {"t2": "InvalidMessageContents"}
    assert [e["MessageBody"] for e in stub.calls[1][1]["Entries"]] == ["x1"]  # retried
    assert p.sent == 2
    assert "t2 (InvalidMessageContents)" in str(raised.value)


FIFO = "https://sqs.us-east-1.amazonaws.com/123456789012/work.fifo"


class FifoSqs(StubSqs):
    """A FIFO queue at the AWS boundary: records what it accepted, in order. Its first
    call is slow, as a throttled call that botocore backs off and retries is (done
    early, within ``backoff`` seconds, when another call of the queue starts meanwhile:
    that call overtook it), and answers ``first_failed`` entries as failed on SQS's side."""

    def __init__(self, *, backoff: float = 0.0, first_failed: tuple[str, ...] = ()) -> None:
        super().__init__(self._answer)
        self.accepted: list[str] = []
        self.first_started = threading.Event()
        self._overtaken = threading.Event()
        self._backoff = backoff
        self._first_failed = first_failed
        self._lock = threading.Lock()

    def _answer(self, _action: str, kwargs: dict) -> dict:
        with self._lock:
            first = not self.first_started.is_set()
            self.first_started.set()
        if first:
            self._overtaken.wait(self._backoff)
        else:
            self._overtaken.set()
        failed = self._first_failed if first else ()
        with self._lock:
            self.accepted += [e["MessageBody"] for e in kwargs["Entries"] if e["Id"] not in failed]
        return {"Failed": [{"Id": i, "SenderFault": False, "Code": "InternalError"}
                           for i in failed]}


@pytest.mark.parametrize("sqs", [
    lambda: FifoSqs(backoff=1.0),
    lambda: FifoSqs(first_failed=("3", "4", "5")),
], ids=["one throttled answer", "a partially failed batch"])
def test_a_fifo_group_keeps_its_order_when_a_batch_is_retried(sqs):
    """The first six tasks go out as a due batch on the timer thread and are retried
    (by botocore's backoff, or for entries SQS failed on its side) while the caller
    fills the next batches: those wait their turn."""
    stub = sqs()
    p = BatchPublisher(flush_delay=0.01)
    p.start()
    for i in range(25):
        p.add(stub, {"QueueUrl": FIFO, "MessageBody": f"x{i}", "MessageGroupId": "g",
                     "MessageDeduplicationId": f"d{i}"}, f"t{i}")
        if i == 5:
            assert stub.first_started.wait(30)  # the timer sent the first six
    p.close()
    assert stub.accepted == [f"x{i}" for i in range(25)]
    assert p.sent == 25


def test_an_entry_sqs_keeps_failing_on_its_side_is_named_after_the_attempts():
    stub = StubSqs(lambda _a, _kw: {"Failed": [{"Id": "0", "SenderFault": False,
                                                 "Code": "InternalError"}]})
    p = publisher(max_attempts=2)
    p.add(stub, request(1), "t1")
    with pytest.raises(PublishError) as raised:
        p.close()
    assert raised.value.failed == {"t1": "failed on SQS's side 2 times"}
    assert len(stub.calls) == 2


def test_a_batch_call_failing_whole_is_not_repeated_and_nothing_is_sent_after_it():
    answers = iter([{}, EndpointConnectionError(endpoint_url=URL)])

    def respond(_action, _kwargs):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    stub = StubSqs(respond)
    p = publisher()
    for i in range(25):
        p.add(stub, request(i), f"t{i}")
    with pytest.raises(PublishError) as raised:
        p.close()
    assert len(stub.calls) == 2  # the client already retried the failed call
    assert p.sent == 10
    assert raised.value.failed == {
        **{f"t{i}": "EndpointConnectionError" for i in range(10, 20)},
        **{f"t{i}": "not sent: a batch call failed with EndpointConnectionError"
           for i in range(20, 25)}}


def test_a_call_whose_answer_was_lost_says_sqs_may_have_queued_it():
    def respond(_action, _kwargs):
        raise ReadTimeoutError(endpoint_url=URL)
    p = publisher()
    p.add(StubSqs(respond), request(1), "t1")
    with pytest.raises(PublishError) as raised:
        p.close()
    assert raised.value.failed == {
        "t1": "ReadTimeoutError: sent, no answer (SQS may have queued it)"}


@pytest.mark.parametrize("error, raised", [
    (aws_error("AccessDenied", 403, "SendMessage"), QueueAccessDenied),
    (aws_error("ThrottlingException", 400, "SendMessage"), PublishError),
    (aws_error("InternalError", 500, "SendMessage"), PublishError),
    (EndpointConnectionError(endpoint_url=URL), PublishError),
    (ReadTimeoutError(endpoint_url=URL), PublishError),
    (NoCredentialsError(), CredentialsError),
    (CredentialRetrievalError(provider="container-role", error_msg="reset"), CredentialsError),
    (ParamValidationError(report="bad"), ParamValidationError),
])
def test_a_failed_publish_raises_a_typed_error_or_publish_error_naming_the_task(error, raised):
    failure = publish_error(error, queue="work", task_id="t1")
    assert type(failure) is raised
    if raised is PublishError:
        assert list(failure.failed) == ["t1"]


def test_publish_error_is_what_celery_callers_catch_and_survives_pickling():
    error = PublishError({"t1": "EndpointConnectionError"})
    assert isinstance(error, OperationalError)  # Celery's documented apply_async error
    copy = pickle.loads(pickle.dumps(error))  # a prefork child hands it to its parent
    assert (copy.failed, str(copy)) == (error.failed, str(error))


def test_batch_publish_refuses_a_transport_that_cannot_batch():
    class App:
        class conf:  # noqa: N801 (Celery's attribute)
            broker_transport = "sqs"
    with pytest.raises(ConfigError, match="batched publishing needs the bundled transport"):
        with batch_publish(App()):
            pass
