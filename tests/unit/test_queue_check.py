"""runtime.queue_check: every way a queue can fail its check before consuming becomes
one of the kit's errors, naming the queue, its URL and what to check, and none of them
is an error kombu would reconnect on (Celery then stops the worker)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, NoCredentialsError, ReadTimeoutError)
from kombu.transport.SQS import Transport

from runtime.errors import (CredentialsError, EndpointUnreachable, QueueAccessDenied,
                            QueueNotFound, TransportError)
from runtime.queue_check import check_queue
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/reports"


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetQueueAttributes")


def failing_with(error: Exception) -> StubSqs:
    def respond(_action, _kwargs):
        raise error
    return StubSqs(respond)


@pytest.mark.parametrize("error, kind, says", [
    (client_error("AWS.SimpleQueueService.NonExistentQueue"), QueueNotFound, "check the region"),
    (client_error("AccessDenied", 403), QueueAccessDenied, "role policy"),
    (client_error("InvalidClientTokenId", 403), CredentialsError, "instance profile"),
    (NoCredentialsError(), CredentialsError, "instance profile"),
    (CredentialsError("*", "sts:AssumeRole", "AccessDenied", "arn:aws:iam::1:role/w"),
     CredentialsError, "arn:aws:iam::1:role/w"),
    (EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
     EndpointUnreachable, 'Could not connect to the endpoint URL: "https://sqs.eu-west-1'),
    (ConnectTimeoutError(endpoint_url="https://sqs.example/"), EndpointUnreachable,
     "check the region and the endpoint URL"),
    (ReadTimeoutError(endpoint_url="https://sqs.example/"), EndpointUnreachable, "DNS"),
    (client_error("InvalidAddress"), TransportError, "InvalidAddress"),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
def test_a_failed_check_names_queue_url_and_what_to_check(error, kind, says):
    with pytest.raises(kind) as raised:
        check_queue(failing_with(error), "reports", URL)
    message = str(raised.value)
    assert message.startswith("GetQueueAttributes on queue 'reports' failed: ") or \
        message.startswith("sts:AssumeRole on queue 'reports' failed: ")
    assert f"queue URL {URL}" in message and says in message
    assert raised.value.__cause__ is error
    # not a connection or channel error: Celery does not reconnect, it stops the worker
    assert not isinstance(raised.value, Transport.connection_errors + Transport.channel_errors)


def test_a_queue_that_answers_passes_with_one_cheap_call():
    stub = StubSqs(lambda _a, _kw: {"Attributes": {"QueueArn": "arn:aws:sqs:::reports"}})
    check_queue(stub, "reports", URL)
    assert stub.calls == [("GetQueueAttributes", {"QueueUrl": URL,
                                                  "AttributeNames": ["QueueArn"]})]


def test_a_bare_403_reads_as_access_denied():
    """moto (and some proxies) answer a refused action with the code "403"."""
    with pytest.raises(QueueAccessDenied, match=r"failed: AccessDenied \(queue URL "):
        check_queue(failing_with(client_error("403", 403)), "reports", URL)


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answering_after(*failures: Exception) -> StubSqs:
    pending = list(failures)

    def respond(_action, _kwargs):
        if pending:
            raise pending.pop(0)
        return {"Attributes": {"QueueArn": "arn:aws:sqs:::reports"}}
    return StubSqs(respond)


def test_a_check_that_meets_throttling_5xx_or_a_reset_asks_again_until_sqs_answers():
    """Found by ``make chaos``: a worker started during a burst of throttling, 503s or
    connection resets exited 1, its log blaming the role policy or the endpoint."""
    clock = Clock()
    stub = answering_after(client_error("ThrottlingException"),
                           client_error("AWS.SimpleQueueService.RequestThrottled"),
                           client_error("ServiceUnavailable", 503),
                           client_error("InternalError", 500),
                           ConnectionClosedError(endpoint_url="https://sqs.example/"))
    check_queue(stub, "reports", URL, sleep=clock.sleep, monotonic=lambda: clock.now)
    assert len(stub.calls) == 6
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_blip_longer_than_the_patience_fails_as_before():
    clock = Clock()
    stub = failing_with(client_error("ServiceUnavailable", 503))
    with pytest.raises(TransportError, match="failed: ServiceUnavailable"):
        check_queue(stub, "reports", URL, patience=30, sleep=clock.sleep,
                    monotonic=lambda: clock.now)
    assert sum(clock.slept) <= 30 and len(stub.calls) == len(clock.slept) + 1 >= 5


@pytest.mark.parametrize("error", [
    client_error("AWS.SimpleQueueService.NonExistentQueue"), client_error("AccessDenied", 403),
    EndpointConnectionError(endpoint_url="https://sqs.example/"),
    ReadTimeoutError(endpoint_url="https://sqs.example/")],
    ids=lambda e: type(e).__name__)
def test_what_says_the_configuration_is_wrong_fails_at_once(error):
    clock = Clock()
    with pytest.raises(TransportError):
        check_queue(failing_with(error), "reports", URL, sleep=clock.sleep,
                    monotonic=lambda: clock.now)
    assert clock.slept == []
