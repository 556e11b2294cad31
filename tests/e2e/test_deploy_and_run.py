"""End to end: the real CDK CLI deploys the app to moto with IAM enforcement; real
celery workers authenticate as the deployed ECS task role (through a loopback
container-credentials endpoint, no keys) and the EC2 instance role (an IMDSv2
stand-in), each on its fleet's queues, and run tasks sent by the producer role;
results come back from the DynamoDB table. What each role is denied is the
least-privilege matrix (test_least_privilege_matrix.py), on the same stage."""

from __future__ import annotations

import json
import re

import pytest

from demo.run import run_demo
from runtime.config import load_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_run(stage, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    return work, run_demo(stage, work, step=lambda _m: None)


def test_deploy_emits_the_worker_config_as_output_and_ssm_parameter(stage):
    config = load_config(str(stage.outputs_file))
    assert set(config.queues) == {"celery", "reports", "orders.fifo"}
    assert config.queues["orders.fifo"].fifo
    assert config.queues["celery"].dead_letter_queue.url.endswith("/celery-dlq")
    assert config.result_backend is not None
    ssm = stage.operator.session().client("ssm", endpoint_url=stage.moto.endpoint_url)
    parameter = ssm.get_parameter(Name=stage.outputs["ConfigParameterName"])["Parameter"]
    assert json.loads(parameter["Value"]) == json.loads(stage.outputs["WorkerConfig"])


def test_deployed_queues_have_the_spec_attributes(stage):
    sqs = stage.operator.session().client("sqs", endpoint_url=stage.moto.endpoint_url)
    config = load_config(str(stage.outputs_file))
    attrs = sqs.get_queue_attributes(QueueUrl=config.queues["celery"].url,
                                     AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "60"  # the bundled transport's default
    assert config.transport == "bundled"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 5


def test_each_fleets_role_runs_the_tasks_of_its_queues(demo_run, stage):
    _work, results = demo_run
    by_task = {r["task"].split("(")[0]: r for r in results}
    assert {r["state"] for r in results} == {"SUCCESS"}
    assert by_task["add"]["result"] == 5
    assert by_task["report"]["result"] == "report q3: ready"
    assert by_task["place_order"]["result"]["status"] == "placed"
    task_role_name = stage.outputs["TaskRoleArn"].split("/")[-1]
    assert by_task["whoami"]["result"].startswith(
        f"arn:aws:sts::123456789012:assumed-role/{task_role_name}/")


def test_no_credentials_in_outputs_config_parameter_or_worker_log(demo_run, stage):
    work, _results = demo_run
    ssm = stage.operator.session().client("ssm", endpoint_url=stage.moto.endpoint_url)
    parameter = ssm.get_parameter(Name=stage.outputs["ConfigParameterName"])["Parameter"]["Value"]
    text = "\n".join([(work / "worker.log").read_text(), (work / "ec2-worker.log").read_text(),
                      (work / "celeryconfig.py").read_text(),
                      stage.outputs_file.read_text(), parameter,
                      (stage.outputs_file.parent / "cdk.log").read_text()])
    assert stage.operator.access_key_id not in text
    assert stage.operator.secret_access_key not in text
    assert not re.search(r"(AKIA|ASIA)[A-Z0-9]{16}", text)
    for marker in ("SecretAccessKey", "SessionToken", "aws_secret_access_key", "secret_key"):
        assert marker not in text
