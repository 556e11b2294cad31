"""WorkerRoles: who the worker identities trust, and the STS roles only they may assume."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import Duration
from aws_cdk.assertions import Match, Template

from infra.constructs import WorkerRoles
from runtime.errors import SpecError
from tests.unit.cdk_context import ROOT

CDK_FLAGS = {k: v for k, v in json.loads((ROOT / "cdk.json").read_text())["context"].items()
             if k != "celery_sqs_kit"}
OPS = "arn:aws:iam::123456789012:user/ops"
ADMIN = "arn:aws:iam::123456789012:role/Admin"
EXTERNAL_ID = "fleet-ext-id"
ENV = cdk.Environment(account="123456789012", region="eu-west-1")


class Built:
    def __init__(self, name: str, flags: dict = CDK_FLAGS, *, assumable: bool = False,
                 **props) -> None:
        self.stack = cdk.Stack(cdk.App(context=flags), name, env=ENV)
        self.roles = WorkerRoles(self.stack, "Workers", **props)
        self.assumable = (self.roles.new_assumable_role("Broker", description="broker access")
                          if assumable else None)
        self.producer = self.roles.new_service_role("Producer", description="producer")
        self.template = Template.from_stack(self.stack)
        self.resources = self.template.to_json()["Resources"]

    def arn(self, role) -> dict:
        return self.stack.resolve(role.role_arn)

    def role(self, role) -> dict:
        (logical_id, _) = self.arn(role)["Fn::GetAtt"]
        return self.resources[logical_id]["Properties"]

    def trust(self, role) -> list[dict]:
        return self.role(role)["AssumeRolePolicyDocument"]["Statement"]

    def statements_of(self, role) -> list[dict]:
        name = self.stack.resolve(role.role_name)
        return [s for r in self.resources.values() if r["Type"] == "AWS::IAM::Policy"
                and name in r["Properties"]["Roles"]
                for s in r["Properties"]["PolicyDocument"]["Statement"]]


@pytest.fixture(scope="module")
def plain() -> Built:
    return Built("Plain")


@pytest.fixture(scope="module")
def with_operator() -> Built:
    return Built("Operator", extra_trusted_principals=[OPS])


@pytest.fixture(scope="module")
def sts() -> Built:
    return Built("Sts", assumable=True, max_session_duration=Duration.hours(2),
                 external_id=EXTERNAL_ID)


@pytest.fixture(scope="module")
def sts_without_external_id() -> Built:
    return Built("StsNoExternalId", assumable=True)


def only_trusts(principal: dict) -> dict:
    """A trust policy of one statement whose Principal is exactly ``principal``."""
    return {"Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow",
                           "Principal": Match.exact(principal),
                           "Condition": Match.absent()}]}


def test_task_role_trusts_only_ecs_tasks(plain):
    plain.template.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker ECS task role",
        "AssumeRolePolicyDocument": only_trusts({"Service": "ecs-tasks.amazonaws.com"})})


def test_instance_role_trusts_only_ec2(plain):
    plain.template.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker EC2 instance role",
        "AssumeRolePolicyDocument": only_trusts({"Service": "ec2.amazonaws.com"})})


def test_instance_profile_holds_the_instance_role(plain):
    plain.template.resource_count_is("AWS::IAM::InstanceProfile", 1)
    plain.template.has_resource_properties("AWS::IAM::InstanceProfile", {
        "Roles": [plain.stack.resolve(plain.roles.instance_role.role_name)]})


def test_worker_roles_are_the_task_and_instance_roles(plain):
    assert plain.roles.worker_roles == (plain.roles.task_role, plain.roles.instance_role)


def test_worker_roles_have_no_permissions_until_granted(plain):
    plain.template.resource_count_is("AWS::IAM::Policy", 0)
    plain.template.has_resource_properties("AWS::IAM::Role", {
        "Description": "Celery worker ECS task role",
        "Policies": Match.absent(), "ManagedPolicyArns": Match.absent()})


def test_producer_service_role_trusts_ecs_tasks(plain):
    plain.template.has_resource_properties("AWS::IAM::Role", {
        "Description": "producer",
        "AssumeRolePolicyDocument": only_trusts({"Service": "ecs-tasks.amazonaws.com"})})


@pytest.mark.parametrize("description, service", [
    ("Celery worker ECS task role", "ecs-tasks.amazonaws.com"),
    ("Celery worker EC2 instance role", "ec2.amazonaws.com"),
    ("producer", "ecs-tasks.amazonaws.com"),
])
def test_extra_principal_joins_the_service_in_one_trust_statement(with_operator, description,
                                                                  service):
    with_operator.template.has_resource_properties("AWS::IAM::Role", {
        "Description": description,
        "AssumeRolePolicyDocument": only_trusts({"Service": service, "AWS": OPS})})


@pytest.mark.parametrize("arn, why", [
    ("arn:aws:iam::999999999999:user/ops", "the stack's account is 123456789012"),
    ("arn:aws:iam::999999999999:root", "must be an IAM user or role ARN"),
    ("arn:aws:iam::123456789012:root", "must be an IAM user or role ARN"),
])
def test_a_foreign_or_root_principal_is_refused_before_any_role_exists(arn, why):
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "Foreign", env=ENV)
    with pytest.raises(SpecError) as raised:
        WorkerRoles(stack, "Workers", extra_trusted_principals=[OPS, arn])
    assert raised.value.field == "extra_trusted_principals[1]"
    assert why in str(raised.value) and raised.value.value == arn
    assert stack.node.try_find_child("Workers") is None


def test_extra_principals_need_the_stacks_account_at_synth():
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "Agnostic")
    with pytest.raises(SpecError, match=r"must be known at synth \(CDK_DEFAULT_ACCOUNT\)"):
        WorkerRoles(stack, "Workers", extra_trusted_principals=[OPS])


@pytest.mark.parametrize("fixture", ["plain", "sts"])
def test_without_extra_principals_no_role_trusts_an_aws_principal_but_via_sts(request, fixture):
    built = request.getfixturevalue(fixture)
    for role in (*built.roles.worker_roles, built.producer):
        for statement in built.trust(role):
            assert "AWS" not in statement["Principal"]


@pytest.fixture(scope="module")
def no_flags() -> Built:
    """An app without cdk.json's feature flags (minimizePolicies off): the L3 construct
    must not depend on the app's flags for its trust-policy shape."""
    return Built("NoFlags", flags={}, assumable=True, extra_trusted_principals=[OPS, ADMIN],
                 external_id=EXTERNAL_ID)


@pytest.mark.parametrize("description, service", [
    ("Celery worker ECS task role", "ecs-tasks.amazonaws.com"),
    ("Celery worker EC2 instance role", "ec2.amazonaws.com"),
    ("producer", "ecs-tasks.amazonaws.com"),
])
def test_extra_principals_share_one_statement_without_the_minimize_flag(no_flags, description,
                                                                        service):
    no_flags.template.has_resource_properties("AWS::IAM::Role", {
        "Description": description,
        "AssumeRolePolicyDocument": only_trusts({"Service": service, "AWS": [OPS, ADMIN]})})


def test_assumable_role_has_one_statement_without_the_minimize_flag(no_flags):
    (statement,) = no_flags.trust(no_flags.assumable)
    assert sorted(map(json.dumps, statement["Principal"]["AWS"])) == sorted(
        json.dumps(no_flags.arn(r)) for r in no_flags.roles.worker_roles)
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}


# --- STS-assumable roles -----------------------------------------------------


def test_assumable_role_trusts_exactly_the_two_worker_roles(sts):
    (statement,) = sts.trust(sts.assumable)
    assert statement["Action"] == "sts:AssumeRole" and statement["Effect"] == "Allow"
    assert set(statement["Principal"]) == {"AWS"}
    trusted = statement["Principal"]["AWS"]
    assert sorted(map(json.dumps, trusted)) == sorted(
        json.dumps(sts.arn(r)) for r in sts.roles.worker_roles)


def test_assumable_role_trusts_no_account_root_or_wildcard(sts):
    text = json.dumps(sts.role(sts.assumable)["AssumeRolePolicyDocument"])
    assert ":root" not in text and '"*"' not in text and "AWS::AccountId" not in text


def test_assumable_role_session_lasts_the_configured_duration(sts):
    assert sts.role(sts.assumable)["MaxSessionDuration"] == 7200


def test_assumable_role_requires_the_external_id(sts):
    (statement,) = sts.trust(sts.assumable)
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}


def test_assumable_role_without_external_id_has_no_condition(sts_without_external_id):
    built = sts_without_external_id
    (statement,) = built.trust(built.assumable)
    assert "Condition" not in statement
    assert built.role(built.assumable)["MaxSessionDuration"] == 3600


@pytest.mark.parametrize("which", ["task_role", "instance_role"])
def test_worker_role_may_assume_exactly_the_assumable_role(sts, which):
    statements = sts.statements_of(getattr(sts.roles, which))
    assert statements == [{"Action": "sts:AssumeRole", "Effect": "Allow",
                           "Resource": sts.arn(sts.assumable)}]


def test_assumable_and_producer_roles_may_assume_nothing(sts):
    for role in (sts.assumable, sts.producer):
        assert sts.statements_of(role) == []


@pytest.mark.parametrize("duration", [Duration.minutes(59), Duration.hours(13)],
                         ids=["below-1h", "above-12h"])
def test_session_duration_out_of_range_raises_before_any_role_exists(duration):
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "BadSession")
    with pytest.raises(SpecError) as raised:
        WorkerRoles(stack, "Workers", max_session_duration=duration)
    assert raised.value.field == "max_session_duration"
    assert "3600..43200 seconds (IAM rule)" in str(raised.value)
    assert raised.value.value == duration.to_seconds()
    assert stack.node.try_find_child("Workers") is None

