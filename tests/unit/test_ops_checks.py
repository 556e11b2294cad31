"""runtime.ops.checks: deployed queue attributes against the emitted config."""

from __future__ import annotations

import json

from runtime.config import parse_document
from runtime.ops.checks import dead_letter_mismatches, encryption, queue_mismatches
from tests.documents import document

CONFIG = parse_document(document(), "doc.json")
REPORTS = CONFIG.queues["reports"]
FIFO = CONFIG.queues["orders.fifo"]


def deployed(queue, **changes) -> dict[str, str]:
    """The attributes SQS reports for ``queue`` deployed as the config says."""
    attributes = {
        "VisibilityTimeout": str(queue.visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": str(queue.wait_time_seconds),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue.dead_letter_queue.arn,
                                     "maxReceiveCount": queue.dead_letter_queue.max_receive_count}),
        "KmsMasterKeyId": "arn:aws:kms:us-east-1:123456789012:key/abcd",
    }
    if queue.fifo:
        attributes["FifoQueue"] = "true"
    attributes.update(changes)
    return {k: v for k, v in attributes.items() if v is not None}


def test_a_queue_deployed_as_configured_has_no_mismatch():
    assert queue_mismatches(REPORTS, deployed(REPORTS)) == []
    assert queue_mismatches(FIFO, deployed(FIFO)) == []


def test_a_drifted_visibility_timeout_is_named_with_its_fix():
    [mismatch] = queue_mismatches(REPORTS, deployed(REPORTS, VisibilityTimeout="30"))
    assert mismatch.line() == ("queues.reports.visibility_timeout: deployed 30, config 1800: "
                               "redeploy the stack or re-render the config")


def test_wait_time_redrive_target_and_receive_count_are_compared():
    found = queue_mismatches(REPORTS, deployed(
        REPORTS, ReceiveMessageWaitTimeSeconds="0",
        RedrivePolicy=json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:other",
                                  "maxReceiveCount": "2"})))
    assert [(m.field, m.deployed, m.config) for m in found] == [
        ("queues.reports.wait_time_seconds", 0, 20),
        ("queues.reports.dead_letter_queue.arn", "arn:aws:sqs:us-east-1:1:other",
         REPORTS.dead_letter_queue.arn),
        ("queues.reports.dead_letter_queue.max_receive_count", 2, 5)]


def test_a_queue_without_its_redrive_policy_says_none():
    [mismatch] = queue_mismatches(REPORTS, deployed(REPORTS, RedrivePolicy=None))
    assert mismatch.summary() == ("queues.reports.dead_letter_queue.arn: deployed none, "
                                  f"config {REPORTS.dead_letter_queue.arn}")


def test_encryption_must_be_kms():
    assert encryption({"KmsMasterKeyId": "alias/aws/sqs"}) == "KMS"
    assert encryption({"SqsManagedSseEnabled": "true"}) == "SSE-SQS"
    assert encryption({}) == "none"
    [mismatch] = queue_mismatches(REPORTS, deployed(REPORTS, KmsMasterKeyId=None,
                                                    SqsManagedSseEnabled="true"))
    assert mismatch.summary() == "queues.reports.encryption: deployed SSE-SQS, config KMS"
    assert "redeploy the stack" in mismatch.fix


def test_a_standard_queue_where_the_config_says_fifo_names_another_queue():
    [mismatch] = queue_mismatches(FIFO, deployed(FIFO, FifoQueue=None))
    assert mismatch.summary() == "queues.orders.fifo.fifo: deployed false, config true"
    assert "re-render the config" in mismatch.fix


def test_the_dlq_must_match_its_queues_type_and_encryption():
    assert dead_letter_mismatches(FIFO, {"FifoQueue": "true", "KmsMasterKeyId": "k"}) == []
    found = dead_letter_mismatches(FIFO, {})
    assert [m.field for m in found] == ["queues.orders.fifo.dead_letter_queue.fifo",
                                        "queues.orders.fifo.dead_letter_queue.encryption"]
