"""RevocationTable: one item per revoked task, expired by TTL, read through a keys-only
index of live entries; readers may only query that index, revokers may only put
revocation entries."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from infra.constructs import RevocationTable
from runtime.schema import REVOCATION_SHARD
from tests.unit.test_result_table import CDK_FLAGS, granted

KEY_READ = {"kms:Decrypt", "kms:DescribeKey"}


@pytest.fixture(scope="module")
def built():
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "Revocations")
    revocations = RevocationTable(stack, "Revocations", table_name="kit-revocations")
    reader = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    revoker = iam.Role(stack, "Revoker", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    revocations.grant_read_revocations(reader)
    revocations.grant_revoke(revoker)
    return stack, revocations, reader, revoker, Template.from_stack(stack)


def as_key(stack, token) -> str:
    return json.dumps(stack.resolve(token), sort_keys=True)


def test_an_item_per_task_in_one_partition_expired_by_ttl(built):
    *_, template = built
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "TableName": "kit-revocations",
        "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"},
                      {"AttributeName": "task_id", "KeyType": "RANGE"}],
        "TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": True},
        "BillingMode": "PAY_PER_REQUEST",
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
    })


def test_live_entries_are_read_through_a_keys_only_index_sorted_by_expiry(built):
    *_, template = built
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "AttributeDefinitions": Match.array_with([
            {"AttributeName": "expires", "AttributeType": "N"}]),
        "LocalSecondaryIndexes": [{
            "IndexName": "live",
            "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"},
                          {"AttributeName": "expires", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}],
    })


def test_reader_may_only_query_the_live_index(built):
    stack, revocations, reader, _, template = built
    assert granted(stack, template, reader) == {
        as_key(stack, revocations.live_index_arn): {"dynamodb:Query"},
        as_key(stack, revocations.encryption_key.key_arn): KEY_READ,
    }


def test_revoker_may_only_put_entries_of_the_revocation_partition_with_their_attributes(built):
    stack, revocations, _, revoker, template = built
    assert granted(stack, template, revoker) == {
        as_key(stack, revocations.table.table_arn): {"dynamodb:PutItem"},
        as_key(stack, revocations.encryption_key.key_arn):
            KEY_READ | {"kms:Encrypt", "kms:GenerateDataKey"},
    }
    template.has_resource_properties("AWS::IAM::Policy", {
        "Roles": [{"Ref": stack.get_logical_id(revoker.node.default_child)}],
        "PolicyDocument": {"Statement": Match.array_with([{
            "Action": "dynamodb:PutItem", "Effect": "Allow",
            "Resource": stack.resolve(revocations.table.table_arn),
            "Condition": {"ForAllValues:StringEquals": {
                "dynamodb:LeadingKeys": [REVOCATION_SHARD],
                "dynamodb:Attributes": ["shard", "task_id", "expires"]}}}])},
    })


def test_without_a_name_cloudformation_names_the_table():
    stack = cdk.Stack(cdk.App(context=CDK_FLAGS), "Unnamed")
    revocations = RevocationTable(stack, "Revocations")
    Template.from_stack(stack).has_resource_properties("AWS::DynamoDB::Table", {
        "TableName": Match.absent()})
    assert "Ref" in stack.resolve(revocations.table_name)
