"""ResultTable: the table Celery's dynamodb result backend expects, encrypted and
recoverable, with read and write grants that stay within what Celery calls."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Capture, Match, Template

from infra.constructs import ResultTable
from tests.unit.cdk_context import ROOT

CDK_FLAGS = {k: v for k, v in json.loads((ROOT / "cdk.json").read_text())["context"].items()
             if k != "celery_sqs_kit"}

READ = {"dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:GetItem",
        "dynamodb:BatchGetItem"}
WRITE = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


@pytest.fixture(scope="module")
def built():
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "Results")
    results = ResultTable(stack, "Results")
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    writer = iam.Role(stack, "Writer", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    results.grant_read_results(reader)
    results.grant_write_results(writer)
    return stack, results, reader, writer, Template.from_stack(stack)


def granted(stack, template, role) -> dict[str, set[str]]:
    """Resource (as JSON) -> actions the role's policies allow on it."""
    name = stack.resolve(role.role_name)
    access: dict[str, set[str]] = {}
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if name not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) \
                else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) \
                else [statement["Resource"]]
            for resource in resources:
                access.setdefault(json.dumps(resource, sort_keys=True), set()).update(actions)
    return access


def test_table_has_celerys_schema(built):
    stack, results, *_, template = built
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
    })


def test_table_is_on_demand(built):
    *_, template = built
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "BillingMode": "PAY_PER_REQUEST", "ProvisionedThroughput": Match.absent()})


def test_table_is_encrypted_with_a_rotating_customer_key(built):
    stack, results, *_, template = built
    key = Capture()
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}})
    assert key.as_object() == stack.resolve(results.encryption_key.key_arn)
    (logical_id, _) = key.as_object()["Fn::GetAtt"]
    assert template.to_json()["Resources"][logical_id]["Type"] == "AWS::KMS::Key"
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_results_expire_through_the_ttl_attribute(built):
    *_, template = built
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True}})


def test_point_in_time_recovery_is_on(built):
    *_, template = built
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}})


def test_results_are_disposable_by_default(built):
    *_, template = built
    template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})


def test_given_key_and_removal_policy_are_used():
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "SharedKey")
    key = kms.Key(stack, "Shared", enable_key_rotation=True)
    ResultTable(stack, "Results", encryption_key=key, removal_policy=cdk.RemovalPolicy.RETAIN)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::KMS::Key", 1)
    template.has_resource("AWS::DynamoDB::Table", {
        "DeletionPolicy": "Retain",
        "Properties": Match.object_like({"SSESpecification": Match.object_like(
            {"KMSMasterKeyId": stack.resolve(key.key_arn)})}),
    })


def test_reader_may_only_describe_and_get_results(built):
    stack, results, reader, _, template = built
    access = granted(stack, template, reader)
    table = json.dumps(stack.resolve(results.table.table_arn), sort_keys=True)
    key = json.dumps(stack.resolve(results.encryption_key.key_arn), sort_keys=True)
    assert access == {table: READ, key: {"kms:Decrypt", "kms:DescribeKey"}}


def test_writer_may_put_update_delete_but_not_scan_or_change_the_table(built):
    stack, results, _, writer, template = built
    access = granted(stack, template, writer)
    table = json.dumps(stack.resolve(results.table.table_arn), sort_keys=True)
    key = json.dumps(stack.resolve(results.encryption_key.key_arn), sort_keys=True)
    assert access == {table: READ | WRITE,
                      key: {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"}}
