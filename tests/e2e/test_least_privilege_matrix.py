"""The least-privilege matrix, enforced by the emulator: each role the stack deploys
against each SQS action on each queue, allowed or denied as SECURITY.md says.

Each fleet's identity reaches its fleet's queues alone (cdk.json: the ECS fleet's task
role celery and orders.fifo, the EC2 fleet's instance role reports), and the DLQs of
those queues for SendMessage only. The stage leaves the fleets' resources out
(``fleets=false``) but not that isolation.

moto (with ``INITIAL_NO_AUTH_ACTION_COUNT``) evaluates the roles' policies for
assumed-role credentials. It cannot evaluate role chaining, so the STS roles' trust
(the fleets that use their queues only, ExternalId) is proven by Template assertions
in tests/unit and their assumption is exercised on a moto without enforcement in
tests/integration/test_sts_roles.py.

The DynamoDB rows: who may write or read revocations and results. moto checks the
action and the table (or index) ARN (``local_aws.moto_main``), but no DynamoDB
condition key: that the producer's ``PutItem`` on the revocations table is limited to
revocation entries (``dynamodb:LeadingKeys``, ``dynamodb:Attributes``) is proven by
Template assertions in tests/unit, and :func:`test_the_emulator_does_not_check_dynamodb_condition_keys`
fails the day moto starts checking them, so that the matrix can take that row over.
"""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws.moto_server import REGION
from runtime.config import load_config
from runtime.schema import REVOCATION_SHARD, REVOCATIONS_LIVE_INDEX

pytestmark = pytest.mark.e2e

ROLES = ("TaskRoleArn", "InstanceRoleArn", "ProducerRoleArn")
CONSUME = ("ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes")
QUEUES = ("celery", "reports", "orders.fifo")
WORKERS_SEND = {"celery", "orders.fifo"}  # cdk.json: reports is consume-only
FLEET_QUEUES = {"TaskRoleArn": {"celery", "orders.fifo"},  # cdk.json: workers.ecs.queues
                "InstanceRoleArn": {"reports"}}            # cdk.json: workers.ec2.queues
CONTROL_PLANE = ("CreateQueue", "DeleteQueue", "SetQueueAttributes", "ListQueues", "PurgeQueue",
                 "GetQueueUrl")


def expected(role: str, action: str, queue: str) -> bool:
    if action in CONTROL_PLANE:
        return False
    name, _, dlq = queue.partition(":")
    consumes = name in FLEET_QUEUES.get(role, ())
    if dlq:
        return consumes and action == "SendMessage"
    if action == "SendMessage":
        return role == "ProducerRoleArn" or (consumes and name in WORKERS_SEND)
    return consumes


CASES = [(role, action, queue) for role in ROLES for queue in QUEUES
         for action in ("SendMessage", *CONSUME)]
CASES += [(role, action, f"{queue}:dlq") for role in ROLES for queue in QUEUES
          for action in ("SendMessage", "ReceiveMessage")]
CASES += [(role, action, "celery") for role in ROLES for action in CONTROL_PLANE]


def role_clients(stage, service: str) -> dict:
    sts = stage.operator.session().client("sts", endpoint_url=stage.moto.endpoint_url)
    out = {}
    for role in ROLES:
        c = sts.assume_role(RoleArn=stage.outputs[role], RoleSessionName="matrix")["Credentials"]
        out[role] = boto3.client(service, endpoint_url=stage.moto.endpoint_url,
                                 region_name=REGION, aws_access_key_id=c["AccessKeyId"],
                                 aws_secret_access_key=c["SecretAccessKey"],
                                 aws_session_token=c["SessionToken"])
    return out


@pytest.fixture(scope="module")
def clients(stage):
    return role_clients(stage, "sqs")


@pytest.fixture(scope="module")
def tables(stage):
    return role_clients(stage, "dynamodb")


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


# --- revocations and results ---------------------------------------------------------

WORKER_ROLES = set(FLEET_QUEUES)  # both fleets' identities share the tables
TABLE_ACTIONS = {
    # (table, action): who may; the request each makes is in table_call.
    ("revocations", "PutEntry"): {"ProducerRoleArn"},  # revoke()
    ("revocations", "QueryLive"): WORKER_ROLES,        # every worker's reader
    ("revocations", "UpdateItem"): set(),              # nobody lifts a revocation...
    ("revocations", "DeleteItem"): set(),              # ...or removes one
    ("results", "UpdateItem"): WORKER_ROLES,           # the producer may not SET ttl
    ("results", "PutItem"): WORKER_ROLES,              # nor write a result
}
TABLE_CASES = [(role, table, action) for role in ROLES
               for (table, action) in TABLE_ACTIONS]


def table_call(ddb, action: str, table: str) -> None:
    entry = {"shard": {"S": REVOCATION_SHARD}, "task_id": {"S": "matrix-task"},
             "expires": {"N": str(int(time.time()) + 600)}}
    calls = {
        "PutEntry": lambda: ddb.put_item(TableName=table, Item=entry),
        "QueryLive": lambda: ddb.query(
            TableName=table, IndexName=REVOCATIONS_LIVE_INDEX,
            KeyConditionExpression="shard = :s AND expires > :now",
            ExpressionAttributeValues={":s": {"S": REVOCATION_SHARD},
                                       ":now": {"N": str(int(time.time()))}}),
        "UpdateItem": lambda: ddb.update_item(
            TableName=table, Key=_key(table), UpdateExpression="SET #ttl = :one",
            ExpressionAttributeNames={"#ttl": "expires" if "revocations" in table else "ttl"},
            ExpressionAttributeValues={":one": {"N": "1"}}),
        "DeleteItem": lambda: ddb.delete_item(TableName=table, Key=_key(table)),
        "PutItem": lambda: ddb.put_item(TableName=table, Item={"id": {"S": "matrix-result"}}),
    }
    calls[action]()


def _key(table: str) -> dict:
    if "revocations" in table:
        return {"shard": {"S": REVOCATION_SHARD}, "task_id": {"S": "matrix-task"}}
    return {"id": {"S": "matrix-result"}}


def table_allowed(ddb, action: str, table: str) -> bool:
    try:
        table_call(ddb, action, table)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException", "403"):
            return False
    return True


def table_names(stage) -> dict[str, str]:
    config = load_config(str(stage.outputs_file))
    return {"revocations": config.revocations.table, "results": config.result_backend.table}


@pytest.mark.parametrize("role, table, action", TABLE_CASES,
                         ids=[f"{r[:-7]}-{a}-{t}" for r, t, a in TABLE_CASES])
def test_role_action_table(stage, tables, role, table, action):
    name = table_names(stage)[table]
    assert table_allowed(tables[role], action, name) is (role in TABLE_ACTIONS[(table, action)])


def test_the_emulator_does_not_check_dynamodb_condition_keys(stage, tables):
    """The producer's PutItem names the revocations table with conditions on the
    partition and the attributes; AWS refuses this item, moto lets it through. Should
    this fail, moto checks them: make it a denial row of the matrix."""
    name = table_names(stage)["revocations"]
    tables["ProducerRoleArn"].put_item(TableName=name, Item={
        "shard": {"S": "not-revocations"}, "task_id": {"S": "x"}, "payload": {"S": "x"}})
