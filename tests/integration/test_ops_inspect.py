"""The operator CLI's read-only commands (status, doctor, dlq peek) as processes against
moto: what they print, their exit statuses, and that looking consumes nothing."""

from __future__ import annotations

import datetime
import json

import boto3
import pytest

from local_aws.fleet import EMULATOR_KEYS
from local_aws.moto_server import REGION
from tests.integration.ops import REASON, make_dead_letters, make_fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(moto, tmp_path_factory):
    """A queue with 2 waiting messages and 4 dead letters: 3 tasks the lane moved, 1 body
    nobody can decode that SQS itself would have moved (no attributes)."""
    fleet = make_fleet(moto.endpoint_url, tmp_path_factory.mktemp("ops"))
    fleet.task_ids = make_dead_letters(fleet, 3)
    fleet.sqs.send_message(QueueUrl=fleet.dlq_url, MessageBody="%% not a kombu message")
    for n in range(2):
        fleet.sqs.send_message(QueueUrl=fleet.queue["url"], MessageBody=f"waiting {n}")
    return fleet


def test_status_shows_depths_dead_letters_and_that_the_queue_matches_its_config(fleet):
    done = fleet.ops("status", "--json")
    assert done.returncode == 0, done.stderr
    [queue] = json.loads(done.stdout)["queues"]
    assert (queue["queue"], queue["visible"], queue["in_flight"], queue["delayed"]) == \
        (fleet.name, 2, 0, 0)
    assert queue["dead_letters"] == 4
    assert queue["matches_config"] and queue["mismatches"] == []
    table = fleet.ops("status")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["QUEUE", "VISIBLE", "IN", "FLIGHT", "DELAYED", "OLDEST", "DLQ",
                              "CONFIG"]
    assert row.split()[0] == fleet.name and row.split()[-1] == "ok"


def test_status_takes_the_age_of_the_oldest_message_from_cloudwatch(fleet, moto):
    before = json.loads(fleet.ops("status", "--json").stdout)["queues"][0]
    assert before["oldest_age_seconds"] is None
    assert before["oldest_age_source"].startswith("n/a")
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto.endpoint_url, region_name=REGION,
                              aws_access_key_id=EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"])
    cloudwatch.put_metric_data(Namespace="AWS/SQS", MetricData=[{
        "MetricName": "ApproximateAgeOfOldestMessage", "Value": 125.0, "Unit": "Seconds",
        "Dimensions": [{"Name": "QueueName", "Value": fleet.name}],
        "Timestamp": datetime.datetime.now(datetime.timezone.utc)}])
    after = fleet.ops("status")
    assert " 2m05s " in after.stdout.splitlines()[1]


def test_peek_shows_reason_source_and_task_and_consumes_nothing(fleet):
    done = fleet.ops("dlq", "peek", fleet.name, "--max", "10", "--json")
    assert done.returncode == 0, done.stderr
    letters = json.loads(done.stdout)["dead_letters"]
    lane_made = sorted((d for d in letters if d["task_id"]), key=lambda d: d["task_id"])
    assert [(d["task"], d["task_id"], d["reason"], d["source_queue"]) for d in lane_made] == \
        [("ttasks.refuse", task_id, REASON, fleet.name) for task_id in fleet.task_ids]
    [undecodable] = [d for d in letters if not d["task_id"]]
    assert undecodable["task"] is None and "not a kombu message" in undecodable["note"]
    assert fleet.depth(fleet.dlq_url) == (4, 0)  # all visible again at once

    two = fleet.ops("dlq", "peek", f"{fleet.name}-dlq", "--max", "2")  # by the DLQ's name
    lines = two.stdout.splitlines()
    assert lines[0] == f"{fleet.name}-dlq: 2 dead letters shown (none consumed)"
    assert lines[1].split()[:4] == ["MESSAGE", "AGE", "RECEIVES", "REASON"]
    assert len(lines) == 4
    assert fleet.depth(fleet.dlq_url) == (4, 0)


def test_doctor_names_each_drifted_setting_with_its_fix(moto, tmp_path):
    drifted = make_fleet(moto.endpoint_url, tmp_path,
                         config_changes={"visibility_timeout": 1800})
    drifted.sqs.set_queue_attributes(QueueUrl=drifted.dlq_url,
                                     Attributes={"KmsMasterKeyId": ""})
    done = drifted.ops("doctor")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert f"  queues.{drifted.name}.visibility_timeout: deployed 30, config 1800: " \
           "redeploy the stack or re-render the config" in lines
    assert any(line.startswith(f"  queues.{drifted.name}.dead_letter_queue.encryption: "
                               "deployed SSE-SQS, config KMS: ") for line in lines)
    assert "2 problems:" in lines
    assert any(line.startswith("permissions not checked: ") for line in lines)
    as_json = json.loads(drifted.ops("doctor", "--json").stdout)
    assert [p["field"] for p in as_json["problems"]] == [
        f"queues.{drifted.name}.visibility_timeout",
        f"queues.{drifted.name}.dead_letter_queue.encryption"]
    assert as_json["queues"][0]["send"].startswith("not checked")
    status = drifted.ops("status")
    assert status.returncode == 1
    assert "2 mismatches (visibility_timeout, dead_letter_queue.encryption)" in status.stdout


def test_a_queue_that_is_not_there_is_an_aws_error_in_one_line(moto, tmp_path):
    gone = make_fleet(moto.endpoint_url, tmp_path)
    gone.sqs.delete_queue(QueueUrl=gone.queue["url"])
    done = gone.ops("status")
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"celery-sqs-kit: GetQueueAttributes on queue {gone.name!r} "
                                  "failed: ")
    assert "no queue at that URL" in done.stderr
    doctor = gone.ops("doctor")
    assert doctor.returncode == 1
    assert f"  queues.{gone.name}.url: deployed no such queue, config {gone.queue['url']}: " \
           "deploy the stack, or pass the config it emitted (--config)" in doctor.stdout
