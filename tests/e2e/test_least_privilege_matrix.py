"""The least-privilege matrix, enforced by the emulator: each role the stack deploys
against each SQS action on each queue, allowed or denied as SECURITY.md says.

moto (with ``INITIAL_NO_AUTH_ACTION_COUNT``) evaluates the roles' policies for
assumed-role credentials. It cannot evaluate role chaining, so the STS broker
role's trust (worker roles only, ExternalId) is proven by Template assertions in
tests/unit and its assumption is exercised on a moto without enforcement in
tests/integration/test_sts_roles.py.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws.moto_server import REGION
from runtime.config import load_config

pytestmark = pytest.mark.e2e

ROLES = ("TaskRoleArn", "InstanceRoleArn", "ProducerRoleArn")
WORKER = {"TaskRoleArn", "InstanceRoleArn"}
CONSUME = ("ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes")
QUEUES = ("celery", "reports", "orders.fifo")
WORKERS_SEND = {"celery", "orders.fifo"}  # cdk.json: reports is consume-only
CONTROL_PLANE = ("CreateQueue", "DeleteQueue", "SetQueueAttributes", "ListQueues", "PurgeQueue",
                 "GetQueueUrl")


def expected(role: str, action: str, queue: str) -> bool:
    if action in CONTROL_PLANE:
        return False
    if queue.endswith(":dlq"):
        return role in WORKER and action == "SendMessage"
    if action == "SendMessage":
        return role == "ProducerRoleArn" or (role in WORKER and queue in WORKERS_SEND)
    return role in WORKER


CASES = [(role, action, queue) for role in ROLES for queue in QUEUES
         for action in ("SendMessage", *CONSUME)]
CASES += [(role, action, f"{queue}:dlq") for role in ROLES for queue in QUEUES
          for action in ("SendMessage", "ReceiveMessage")]
CASES += [(role, action, "celery") for role in ROLES for action in CONTROL_PLANE]


@pytest.fixture(scope="module")
def clients(stage):
    sts = stage.operator.session().client("sts", endpoint_url=stage.moto.endpoint_url)
    out = {}
    for role in ROLES:
        c = sts.assume_role(RoleArn=stage.outputs[role], RoleSessionName="matrix")["Credentials"]
        out[role] = boto3.client("sqs", endpoint_url=stage.moto.endpoint_url, region_name=REGION,
                                 aws_access_key_id=c["AccessKeyId"],
                                 aws_secret_access_key=c["SecretAccessKey"],
                                 aws_session_token=c["SessionToken"])
    return out


def call(sqs, action: str, url: str) -> None:
    fifo = {"MessageGroupId": "g", "MessageDeduplicationId": "d"} if url.endswith(".fifo") else {}
    calls = {
        "SendMessage": lambda: sqs.send_message(QueueUrl=url, MessageBody="{}", **fifo),
        "ReceiveMessage": lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0),
        "DeleteMessage": lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="bogus"),
        "ChangeMessageVisibility": lambda: sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle="bogus", VisibilityTimeout=1),
        "GetQueueAttributes": lambda: sqs.get_queue_attributes(QueueUrl=url,
                                                               AttributeNames=["All"]),
        "CreateQueue": lambda: sqs.create_queue(QueueName="rogue"),
        "DeleteQueue": lambda: sqs.delete_queue(QueueUrl=url),
        "SetQueueAttributes": lambda: sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"VisibilityTimeout": "1"}),
        "ListQueues": lambda: sqs.list_queues(),
        "PurgeQueue": lambda: sqs.purge_queue(QueueUrl=url),
        "GetQueueUrl": lambda: sqs.get_queue_url(QueueName="celery"),
    }
    calls[action]()


def allowed(sqs, action: str, url: str) -> bool:
    """Authorized or not; an authorized call may still fail (a bogus receipt handle)."""
    try:
        call(sqs, action, url)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("AccessDenied", "AccessDeniedException", "403"):
            return False
    return True


@pytest.mark.parametrize("role, action, queue", CASES,
                         ids=[f"{r[:-7]}-{a}-{q}" for r, a, q in CASES])
def test_role_action_queue(stage, clients, role, action, queue):
    config = load_config(str(stage.outputs_file))
    name, _, dlq = queue.partition(":")
    entry = config.queues[name]
    url = entry.dead_letter_queue.url if dlq else entry.url
    assert allowed(clients[role], action, url) is expected(role, action, queue)

