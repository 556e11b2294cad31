"""runtime.ops.messages: dead letters decoded from what kombu and the transport write."""

from __future__ import annotations

import base64
import json

from runtime.ops.messages import describe, task_of


def b64(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def envelope(task="app.tasks.report", task_id="3f1c-42") -> dict:
    return {"body": b64([["q1"], {}, {}]), "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": task_id, "retries": 0},
            "properties": {"correlation_id": task_id, "body_encoding": "base64"}}


def test_task_name_and_id_from_kombus_base64_envelope():
    assert task_of(b64(envelope())) == ("app.tasks.report", "3f1c-42", None)


def test_plain_json_envelope_works_too():
    assert task_of(json.dumps(envelope()))[:2] == ("app.tasks.report", "3f1c-42")


def test_base64_without_padding_is_decoded():
    assert task_of(b64(envelope()).rstrip("="))[:2] == ("app.tasks.report", "3f1c-42")


def test_protocol_1_keeps_task_and_id_in_the_payload():
    body = {"body": b64({"task": "app.tasks.old", "id": "p1-7", "args": []}),
            "headers": {}, "properties": {"body_encoding": "base64"}}
    assert task_of(b64(body))[:2] == ("app.tasks.old", "p1-7")


def test_an_undecodable_body_is_described_not_an_error():
    task, task_id, note = task_of("not base64 ~~ nor json")
    assert (task, task_id) == (None, None) and "not a kombu message" in note
    task, _, note = task_of(b64(["a", "list"]))
    assert task is None and "not a kombu message" in note


def test_json_without_a_task_header_says_so():
    task, task_id, note = task_of(b64({"headers": {}, "properties": {"correlation_id": "c9"}}))
    assert (task, task_id) == (None, "c9") and "no task header" in note


def test_describe_reads_the_transports_attributes_and_sqs_system_attributes():
    letter = describe({
        "MessageId": "m-1", "ReceiptHandle": "h", "Body": b64(envelope()),
        "Attributes": {"SentTimestamp": "1767225600000", "ApproximateReceiveCount": "3",
                       "MessageGroupId": "customer-42"},
        "MessageAttributes": {
            "kit_reason": {"DataType": "String", "StringValue": "rejected without requeue"},
            "kit_source_queue": {"DataType": "String", "StringValue": "reports"}}})
    assert letter.as_json() == {
        "message_id": "m-1", "sent_at": 1767225600.0, "receive_count": 3,
        "reason": "rejected without requeue", "source_queue": "reports",
        "group_id": "customer-42", "task": "app.tasks.report", "task_id": "3f1c-42",
        "note": None}


def test_a_message_sqs_moved_itself_has_no_reason_or_source():
    letter = describe({"MessageId": "m-2", "Body": b64(envelope())})
    assert (letter.reason, letter.source_queue, letter.sent_at) == (None, None, None)
