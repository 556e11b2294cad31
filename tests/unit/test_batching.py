"""runtime.batching: one *Batch call, each entry sorted into done, retry or failed."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from runtime.batching import send_batch
from runtime.errors import CredentialsError
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


def delete(stub: StubSqs, handles: list[str]):
    return send_batch(stub.delete_message_batch, URL, handles,
                      lambda h: {"ReceiptHandle": h})


def test_entries_are_numbered_and_sent_in_one_call():
    stub = StubSqs()
    outcome = delete(stub, ["a", "b"])
    assert stub.calls == [("DeleteMessageBatch", {"QueueUrl": URL, "Entries": [
        {"Id": "0", "ReceiptHandle": "a"}, {"Id": "1", "ReceiptHandle": "b"}]})]
    assert outcome.done == ["a", "b"] and outcome.retry == [] and outcome.failed == []


def test_more_than_ten_entries_is_refused_before_any_request():
    stub = StubSqs()
    with pytest.raises(ValueError, match="at most 10 entries, got 11"):
        delete(stub, [str(i) for i in range(11)])
    assert stub.calls == []


def test_a_server_side_entry_failure_is_retried_a_sender_fault_is_final():
    stub = StubSqs(lambda _a, _kw: {"Failed": [
        {"Id": "1", "SenderFault": False, "Code": "InternalError"},
        {"Id": "2", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]})
    outcome = delete(stub, ["ok", "again", "stale"])
    assert outcome.done == ["ok"]
    assert outcome.retry == ["again"]
    assert outcome.failed == [("stale", "ReceiptHandleIsInvalid")]


@pytest.mark.parametrize("error", [
    ClientError({"Error": {"Code": "RequestThrottled"}}, "DeleteMessageBatch"),
    ClientError({"Error": {"Code": "ExpiredToken"}}, "DeleteMessageBatch"),
    EndpointConnectionError(endpoint_url=URL),
    ReadTimeoutError(endpoint_url=URL),
    CredentialsError("*", "sts:AssumeRole", "RequestTimeout"),  # botocore's mandatory refresh
    RuntimeError("anything else"),
], ids=lambda e: type(e).__name__)
def test_a_whole_call_failing_transiently_keeps_every_entry_to_retry(error):
    def respond(_action, _kwargs):
        raise error
    outcome = delete(StubSqs(respond), ["a", "b"])
    assert outcome.retry == ["a", "b"] and outcome.done == [] and outcome.failed == []
    assert outcome.error is error


def test_access_denied_fails_every_entry_for_good_with_its_code():
    def respond(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "DeleteMessageBatch")
    outcome = delete(StubSqs(respond), ["a"])
    assert outcome.failed == [("a", "AccessDenied")] and outcome.retry == []
