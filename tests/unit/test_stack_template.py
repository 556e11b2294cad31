"""CeleryKitStack, CeleryQueue, WorkerRoles, ResultTable: the template says what the
spec asked for, and least privilege holds (asserted on intent, never logical IDs)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import CfnParameter, Duration, Token
from aws_cdk.assertions import Capture, Match, Template

from infra.constructs import CeleryQueue
from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from runtime.errors import SpecError
from tests.unit.cdk_context import default_context, sts_context

OPERATOR = "arn:aws:iam::123456789012:user/kit-operator"


def template_for(context, extra: str | None = None) -> Template:
    app = cdk.App()
    stack = CeleryKitStack(app, "Kit", spec=load_spec(context, extra))
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def default() -> Template:
    return template_for(default_context())


@pytest.fixture(scope="module")
def with_sts() -> Template:
    return template_for(sts_context())


def policies(template: Template) -> dict[str, list[dict]]:
    """Policy statements by the role they attach to (role logical id)."""
    out: dict[str, list[dict]] = {}
    for policy in template.find_resources("AWS::IAM::Policy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        for role in policy["Properties"]["Roles"]:
            out.setdefault(role["Ref"], []).extend(statements)
    return out


def role_id(template: Template, service: str, description: str) -> str:
    for logical_id, role in template.find_resources("AWS::IAM::Role").items():
        if role["Properties"].get("Description", "").startswith(description):
            return logical_id
    raise AssertionError(f"no role described {description!r}")


def actions_on(statements: list[dict], fragment: str) -> set[str]:
    """Actions granted on resources whose reference mentions ``fragment``."""
    found: set[str] = set()
    for s in statements:
        if fragment in json.dumps(s.get("Resource")):
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            found.update(actions)
    return found


# queues -----------------------------------------------------------------------------
def test_queue_has_spec_attributes_kms_and_redrive(default):
    default.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "celery", "VisibilityTimeout": 1800, "ReceiveMessageWaitTimeSeconds": 20,
        "MessageRetentionPeriod": 345600, "MaximumMessageSize": 262144,
        "KmsMasterKeyId": {"Fn::GetAtt": [Match.any_value(), "Arn"]},
        "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": 5},
    })


def test_dead_letter_queue_admits_only_its_source(default):
    default.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "celery-dlq", "MessageRetentionPeriod": 1209600,
        "RedriveAllowPolicy": {"redrivePermission": "byQueue",
                               "sourceQueueArns": [Match.object_like({"Fn::Join": Match.any_value()})]},
        "KmsMasterKeyId": Match.any_value(),
    })
    allow = Capture()
    default.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "reports-dlq", "RedriveAllowPolicy": {"sourceQueueArns": [allow],
                                                           "redrivePermission": "byQueue"}})
    assert ":reports" in json.dumps(allow.as_object())


def test_fifo_queue_and_its_dlq_are_fifo(default):
    default.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "orders.fifo", "FifoQueue": True, "ContentBasedDeduplication": True,
        "VisibilityTimeout": 900})
    default.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "orders-dlq.fifo", "FifoQueue": True})


def test_every_queue_policy_denies_requests_without_tls(default):
    policies_ = default.find_resources("AWS::SQS::QueuePolicy")
    assert len(policies_) == 6  # three queues, three DLQs
    for policy in policies_.values():
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Principal"] == {"AWS": "*"} and statement["Action"] == "sqs:*"


def test_key_rotates(default):
    default.resource_count_is("AWS::KMS::Key", 1)
    default.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_a_queue_without_dlq_has_no_redrive():
    ctx = default_context()
    ctx = {**ctx, "default_queue": "solo", "queues": [{"name": "solo", "dead_letter_queue": False}]}
    template = template_for(ctx)
    template.resource_count_is("AWS::SQS::Queue", 1)
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "solo", "RedrivePolicy": Match.absent()})


# construct validation ----------------------------------------------------------------
def test_construct_skips_tokens_but_rejects_a_concrete_bad_value():
    stack = cdk.Stack(cdk.App(), "S")
    token = CfnParameter(stack, "Visibility", type="Number").value_as_number
    assert Token.is_unresolved(token)
    CeleryQueue(stack, "Deferred", queue_name="deferred",
                visibility_timeout=Duration.seconds(token))
    with pytest.raises(SpecError, match=r"^visibility_timeout must be 0\.\.43200 seconds, got 50000"):
        CeleryQueue(stack, "Bad", queue_name="bad", visibility_timeout=Duration.seconds(50000))


def test_construct_validates_before_creating_anything():
    stack = cdk.Stack(cdk.App(), "S")
    before = len(stack.node.children)
    with pytest.raises(SpecError, match="receive_wait_time must be 0..20 seconds, got 30"):
        CeleryQueue(stack, "Bad", queue_name="bad", receive_wait_time=Duration.seconds(30))
    assert len(stack.node.children) == before


# roles ---------------------------------------------------------------------------------
def test_worker_roles_trust_only_their_service(default):
    default.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker ECS task role",
        "AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}})
    default.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker EC2 instance role",
        "AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"}}]}})
    default.has_resource_properties("AWS::IAM::InstanceProfile", {
        "Roles": [{"Ref": role_id(default, "ec2", "Celery worker EC2 instance role")}]})


def test_extra_trusted_principal_joins_the_service_in_one_statement():
    template = template_for(default_context(), OPERATOR)  # no minimizePolicies flag here
    template.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker ECS task role",
        "AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com", "AWS": OPERATOR}}]}})


def test_broker_role_is_assumable_only_by_worker_roles_with_external_id(with_sts):
    trust = Capture()
    with_sts.has_resource_properties("AWS::IAM::Role", {
        "Description": Match.string_like_regexp("Celery broker access"),
        "MaxSessionDuration": 7200, "AssumeRolePolicyDocument": trust})
    (statement,) = trust.as_object()["Statement"]  # one statement: moto needs it
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "fleet-ext-id"}}
    assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
    principals = statement["Principal"]["AWS"]
    assert len(principals) == 2
    text = json.dumps(principals)
    assert "TaskRole" in text and "InstanceRole" in text
    assert ":root" not in text and '"*"' not in text


def test_worker_roles_may_assume_exactly_the_sts_roles(with_sts):
    for description in ("Celery worker ECS task role", "Celery worker EC2 instance role"):
        statements = policies(with_sts)[role_id(with_sts, "", description)]
        assume = [s for s in statements if "sts:AssumeRole" in json.dumps(s["Action"])]
        resources = json.dumps([s["Resource"] for s in assume])
        assert "BrokerRole" in resources and "QueueRolereports" in resources


# least privilege ---------------------------------------------------------------------
FORBIDDEN = {"sqs:ListQueues", "sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:DeleteQueue",
             "sqs:SetQueueAttributes", "sqs:PurgeQueue", "sqs:*", "*"}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
           "sqs:GetQueueAttributes"}


@pytest.mark.parametrize("which", ["default", "with_sts"])
def test_no_policy_has_wildcards_or_control_plane_actions(which, request):
    template = request.getfixturevalue(which)
    for statements in policies(template).values():
        for s in statements:
            actions = set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
            assert not actions & FORBIDDEN, s
            assert s["Resource"] != "*" and "*" not in json.dumps(s["Resource"]), s


def test_workers_consume_exactly_and_send_only_where_allowed(default):
    for description in ("Celery worker ECS task role", "Celery worker EC2 instance role"):
        statements = policies(default)[role_id(default, "", description)]
        celery = actions_on(statements, "QueueceleryQueue")
        reports = actions_on(statements, "QueuereportsQueue")
        assert celery == CONSUME | {"sqs:SendMessage"}
        assert reports == CONSUME  # consume-only: workers_send is false
        assert actions_on(statements, "QueuereportsDeadLetterQueue") == {"sqs:SendMessage"}


def test_producer_only_sends_and_reads_results(default):
    statements = policies(default)[role_id(default, "", "Application tier")]
    sqs_actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list)
                                                   else [s["Action"]]) if a.startswith("sqs:")}
    assert sqs_actions == {"sqs:SendMessage"}
    ddb = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list)
                                           else [s["Action"]]) if a.startswith("dynamodb:")}
    assert ddb == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:DescribeTable",
                   "dynamodb:DescribeTimeToLive"}


def test_with_sts_worker_roles_hold_no_queue_actions(with_sts):
    for description in ("Celery worker ECS task role", "Celery worker EC2 instance role"):
        statements = policies(with_sts)[role_id(with_sts, "", description)]
        assert not any(a.startswith("sqs:") for s in statements
                       for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))


def test_dedicated_role_alone_reaches_its_queue(with_sts):
    holders = [role for role, statements in policies(with_sts).items()
               if actions_on(statements, "QueuereportsQueue")]
    assert len(holders) == 2  # the dedicated role (consume) and the producer (send)
    broker = role_id(with_sts, "", "Celery broker access")
    assert not actions_on(policies(with_sts)[broker], "QueuereportsQueue")


# results, outputs, SSM ---------------------------------------------------------------
def test_result_table_matches_celerys_backend(default):
    default.has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS",
                             "KMSMasterKeyId": Match.any_value()},
        "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    })


def test_outputs_and_parameter_carry_the_config_and_no_secret(default):
    outputs = default.to_json()["Outputs"]
    assert {"WorkerConfig", "ConfigParameterName", "TaskRoleArn", "InstanceRoleArn",
            "InstanceProfileArn", "ProducerRoleArn"} <= set(outputs)
    default.has_resource_properties("AWS::SSM::Parameter", {
        "Name": "/celery-sqs-kit/CelerySqsKit/worker-config", "Type": "String"})
    text = json.dumps(outputs["WorkerConfig"])
    assert "celery-sqs-kit/worker-config" in text
    for secret in ("AccessKey", "SecretAccess", "SessionToken", "aws_secret", "AKIA"):
        assert secret not in text
