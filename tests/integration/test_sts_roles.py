"""STS roles exercised for real (moto without IAM enforcement, which cannot
evaluate role chaining): a bundled worker consumes three queues through a shared
broker role and a per-queue role, each assumed once and shared by every client."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.fleet import create_queue, prepare_worker_dir, worker_document
from local_aws.moto_server import REGION
from tests.integration.fleet import (RECORDING_TASKS, lines, publish, sqs_client, wait_for,
                                     worker_env)

pytestmark = pytest.mark.integration


def make_role(moto, name: str) -> str:
    iam = boto3.client("iam", endpoint_url=moto.endpoint_url, region_name=REGION,
                       aws_access_key_id="test", aws_secret_access_key="test")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": "123456789012"}}]}
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_three_queues_share_the_broker_role_and_a_queue_uses_its_own(moto, tmp_path):
    sqs = sqs_client(moto.endpoint_url)
    suffix = uuid.uuid4().hex[:6]
    broker = make_role(moto, f"broker-{suffix}")
    reports_role = make_role(moto, f"reports-{suffix}")
    names = [f"a{suffix}", f"b{suffix}", f"reports{suffix}"]
    queues = {n: create_queue(sqs, n, visibility=60, wait=1) for n in names}
    queues[names[2]]["sts_role_arn"] = reports_role
    document = worker_document(queues, default_queue=names[0])
    document["sts"] = {"role_arn": broker, "token_timeout": 900, "external_id": "fleet-1"}
    prepare_worker_dir(tmp_path, document, transport="bundled", tasks_module="ttasks",
                       tasks_source=RECORDING_TASKS)
    runs = tmp_path / "runs.txt"
    runs.touch()
    env = worker_env(tmp_path, moto.endpoint_url, KIT_TEST_RUNS=str(runs))
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2,
                      queues=names) as worker:
        publish(env, "from ttasks import quick\n" + "".join(
            f"quick.apply_async(('{n}',), queue='{n}')\n" for n in names), tmp_path)
        wait_for(lambda: len(lines(runs)) == 3, 30, "a task from each queue")
        log = worker.log_text()
    assert sorted(lines(runs)) == sorted(f"quick {n}" for n in names)
    assert log.count(f"assumed {broker} as celery-") == 1
    assert log.count(f"assumed {reports_role} as celery-") == 1
    assert "SecretAccessKey" not in log and "SessionToken" not in log
