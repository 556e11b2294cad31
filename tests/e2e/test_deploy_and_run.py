"""End to end: the real CDK CLI deploys the app to moto with IAM enforcement; real
celery workers authenticate as the deployed ECS task role (through a loopback
container-credentials endpoint, no keys) and the EC2 instance role (an IMDSv2
stand-in), each on its fleet's queues, and run tasks sent by the producer role;
results come back from the DynamoDB table. Then the negative: each role is denied
what it was not granted."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from botocore.exceptions import ClientError

from demo.run import run_demo
from local_aws.container_credentials import ContainerCredentialsEndpoint
from local_aws.moto_server import REGION
from runtime.config import load_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_run(stage, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    return work, run_demo(stage, work, step=lambda _m: None)


def role_client(stage, role_arn: str, service: str):
    """A client holding only the role's assumed credentials."""
    creds = stage.operator.session().client("sts", endpoint_url=stage.moto.endpoint_url) \
        .assume_role(RoleArn=role_arn, RoleSessionName="e2e")["Credentials"]
    return boto3.client(service, endpoint_url=stage.moto.endpoint_url, region_name=REGION,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def assert_denied(call, **kwargs):
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    assert caught.value.response["Error"]["Code"] in ("AccessDenied", "403"), caught.value


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


def test_task_role_cannot_send_to_a_consume_only_queue(stage):
    sqs = role_client(stage, stage.outputs["TaskRoleArn"], "sqs")
    config = load_config(str(stage.outputs_file))
    assert_denied(sqs.send_message, QueueUrl=config.queues["reports"].url, MessageBody="x")
    # ...while the same role may send where retries need it:
    sqs.send_message(QueueUrl=config.queues["celery"].url, MessageBody="allowed")


@pytest.mark.parametrize("action, kwargs", [
    ("create_queue", {"QueueName": "rogue"}),
    ("list_queues", {}),
    ("get_queue_url", {"QueueName": "celery"}),
])
def test_task_role_has_no_control_plane_access(stage, action, kwargs):
    sqs = role_client(stage, stage.outputs["TaskRoleArn"], "sqs")
    assert_denied(getattr(sqs, action), **kwargs)


def test_producer_role_cannot_consume(stage):
    sqs = role_client(stage, stage.outputs["ProducerRoleArn"], "sqs")
    config = load_config(str(stage.outputs_file))
    assert_denied(sqs.receive_message, QueueUrl=config.queues["celery"].url)
    assert_denied(sqs.delete_queue, QueueUrl=config.queues["celery"].url)


def test_container_credentials_are_what_boto3_uses(stage, monkeypatch):
    session = stage.operator.session()
    with ContainerCredentialsEndpoint(session, stage.outputs["TaskRoleArn"],
                                      stage.moto.endpoint_url) as endpoint:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.uri)
        assert boto3.Session().get_credentials().method == "container-role"
