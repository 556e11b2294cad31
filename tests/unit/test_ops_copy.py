"""runtime.ops.copy's pure parts: what a copy carries, which it refuses, what a failed send
means; and runtime.ops.move_task's reading of "this endpoint has no move tasks"."""

from __future__ import annotations

from botocore.exceptions import (ConnectionClosedError, EndpointConnectionError,
                                 ReadTimeoutError)
from botocore.exceptions import ClientError

from runtime.config import parse_document
from runtime.ops.copy import (Pacer, copy_request, hold_for, known_unsent,
                              names_another_queue)
from runtime.ops.move_task import not_offered
from tests.documents import document

CONFIG = parse_document(document(), "doc.json")


def dead_letter(source="reports", **system) -> dict:
    return {"MessageId": "m-1", "ReceiptHandle": "h", "Body": "Ym9keQ==",
            "Attributes": system,
            "MessageAttributes": {
                "kit_reason": {"DataType": "String", "StringValue": "rejected without requeue"},
                "kit_source_queue": {"DataType": "String", "StringValue": source},
                "tenant": {"DataType": "String", "StringValue": "acme",
                           "StringListValues": []}}}


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessage")


def test_a_copy_keeps_body_and_attributes_but_not_the_dead_letter_marks():
    request = copy_request(dead_letter(), CONFIG.queues["reports"])
    assert request == {"QueueUrl": CONFIG.queues["reports"].url, "MessageBody": "Ym9keQ==",
                       "MessageAttributes": {"tenant": {"DataType": "String",
                                                        "StringValue": "acme"}}}


def test_a_fifo_copy_keeps_its_group_and_has_a_deduplication_id_fixed_per_dead_letter():
    fifo = CONFIG.queues["orders.fifo"]
    letter = dead_letter("orders.fifo", MessageGroupId="customer-42",
                         MessageDeduplicationId="original")
    request = copy_request(letter, fifo)
    assert request["MessageGroupId"] == "customer-42"
    assert request["MessageDeduplicationId"] == "kit-redrive-m-1"
    assert copy_request(letter, fifo) == request  # the same on every attempt and every rerun


def test_only_a_kit_source_queue_naming_another_queue_marks_a_dead_letter_as_misdirected():
    """The destination is always the owner (the queue whose DLQ it is); the attribute, which
    any sender may set, only decides whether the dead letter is refused."""
    owner = CONFIG.queues["reports"]
    assert names_another_queue(dead_letter("celery"), owner)
    assert names_another_queue(dead_letter("gone"), owner)
    assert not names_another_queue(dead_letter("reports"), owner)
    assert not names_another_queue({"MessageId": "m"}, owner)


def test_only_a_refusal_or_no_connection_proves_a_send_stored_nothing():
    assert known_unsent(client_error("AccessDenied", 403))
    assert known_unsent(client_error("RequestThrottled", 400))
    assert known_unsent(EndpointConnectionError(endpoint_url="http://x"))
    assert not known_unsent(client_error("InternalError", 500))
    assert not known_unsent(ReadTimeoutError(endpoint_url="http://x"))
    assert not known_unsent(ConnectionClosedError(endpoint_url="http://x"))


def test_the_hold_covers_the_batch_at_the_rate_plus_a_margin():
    assert hold_for(10, 50) == 11
    assert hold_for(10, 1) == 20


def test_unknown_actions_and_non_aws_answers_mean_no_move_tasks():
    assert not_offered(client_error("InvalidAction", 400))  # fauxqs
    assert not_offered(client_error("500", 500))  # moto: an HTML page, no AWS code
    assert not_offered(client_error("UnsupportedOperation", 400))
    assert not not_offered(client_error("AccessDenied", 403))
    assert not not_offered(client_error("InternalError", 500))
    assert not not_offered(EndpointConnectionError(endpoint_url="http://x"))


def test_the_pacer_spaces_sends_evenly_at_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25]
    now[0] += 10  # idle time is not saved up for a burst
    pacer.wait()
    pacer.wait()
    assert slept[-1] == 0.25 and len(slept) == 5
