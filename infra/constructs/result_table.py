"""The DynamoDB table behind Celery's ``dynamodb`` result backend."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


KEY_ATTRIBUTE = "id"
TTL_ATTRIBUTE = "ttl"
"""Celery's DynamoDB backend stores ``id`` (string key) and expires items by ``ttl``."""

# Celery calls DescribeTable and DescribeTimeToLive when its client starts; the
# table is pre-created with its schema and TTL, so no Create/Update is needed.
READ_ACTIONS = ("dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:GetItem",
                "dynamodb:BatchGetItem")
WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
KEY_READ_ACTIONS = ("kms:Decrypt", "kms:DescribeKey")
KEY_WRITE_ACTIONS = ("kms:Encrypt", "kms:GenerateDataKey")


def encrypted_table(scope: Construct, *, encryption_key: kms.IKey,
                    removal_policy: RemovalPolicy, **keys: object) -> dynamodb.Table:
    """The kit's kind of table, as ``scope``'s ``Table``: on demand, encrypted with
    ``encryption_key``, point-in-time recovery on; ``keys`` are the table's key schema,
    name and TTL attribute (``dynamodb.Table``'s props)."""
    return dynamodb.Table(
        scope, "Table",
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=encryption_key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True),
        removal_policy=removal_policy,
        **keys,
    )


class ResultTable(Construct):
    """An on-demand, encrypted, point-in-time-recoverable table in Celery's schema.

    Props (keyword-only): ``encryption_key`` (default: a new customer-managed key
    with rotation on), ``removal_policy`` (default ``DESTROY``: results are
    disposable by design, they expire through the TTL attribute).

    Attributes: ``table``, ``encryption_key``.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 encryption_key: kms.IKey | None = None,
                 removal_policy: RemovalPolicy = RemovalPolicy.DESTROY) -> None:
        super().__init__(scope, construct_id)
        self.encryption_key: kms.IKey = encryption_key or kms.Key(
            self, "Key", enable_key_rotation=True, description="Encrypts Celery task results")
        self.table = encrypted_table(
            self, encryption_key=self.encryption_key, removal_policy=removal_policy,
            partition_key=dynamodb.Attribute(name=KEY_ATTRIBUTE,
                                             type=dynamodb.AttributeType.STRING),
            time_to_live_attribute=TTL_ATTRIBUTE)

    def grant_read_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """What a client waiting on ``AsyncResult.get()`` needs."""
        self.encryption_key.grant(grantee, *KEY_READ_ACTIONS)
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(READ_ACTIONS),
                                          resource_arns=[self.table.table_arn])

    def grant_write_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """What a worker storing results needs (read included: Celery reads back state)."""
        self.grant_read_results(grantee)
        self.encryption_key.grant(grantee, *KEY_WRITE_ACTIONS)
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(WRITE_ACTIONS),
                                          resource_arns=[self.table.table_arn])
