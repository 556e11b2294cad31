"""The DynamoDB table behind ``runtime.revocation``: one item per revoked task.

Kept apart from the result table so that IAM can tell the two apart by resource: worker
roles write results but may only query revocations, and the producer role may only put
revocation entries (the emulator enforces resources, not DynamoDB's condition keys).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constructs.result_table import KEY_READ_ACTIONS, KEY_WRITE_ACTIONS, encrypted_table
from runtime.schema import (REVOCATION_EXPIRES_ATTRIBUTE, REVOCATION_SHARD,
                            REVOCATION_SHARD_ATTRIBUTE, REVOCATION_TASK_ATTRIBUTE,
                            REVOCATIONS_LIVE_INDEX)

ENTRY_ATTRIBUTES = (REVOCATION_SHARD_ATTRIBUTE, REVOCATION_TASK_ATTRIBUTE,
                    REVOCATION_EXPIRES_ATTRIBUTE)
"""All a revocation entry holds, and all the producer role may write."""


class RevocationTable(Construct):
    """An on-demand, encrypted, point-in-time-recoverable table of revocations.

    Keys: ``shard`` (partition, always ``runtime.schema.REVOCATION_SHARD``) and
    ``task_id`` (sort); ``expires`` (epoch seconds) is the TTL attribute, so expired
    entries are deleted by DynamoDB, and the sort key of the keys-only local secondary
    index ``live``, so a reader queries only entries that have not expired (DynamoDB also
    refuses an ``expires`` that is not a number, as the index's key).

    Props (keyword-only): ``table_name`` (default: one CloudFormation generates),
    ``encryption_key`` (default: a new customer-managed key with rotation on),
    ``removal_policy`` (default ``DESTROY``: a revocation is useless once its stack's
    queues are gone).

    Attributes: ``table``, ``table_name`` (the name given, known at synth, else the
    table's deploy-time name), ``encryption_key``, ``live_index_arn``.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 table_name: str | None = None,
                 encryption_key: kms.IKey | None = None,
                 removal_policy: RemovalPolicy = RemovalPolicy.DESTROY) -> None:
        super().__init__(scope, construct_id)
        self.encryption_key: kms.IKey = encryption_key or kms.Key(
            self, "Key", enable_key_rotation=True, description="Encrypts Celery revocations")
        self.table = encrypted_table(
            self, encryption_key=self.encryption_key, removal_policy=removal_policy,
            table_name=table_name,
            partition_key=dynamodb.Attribute(name=REVOCATION_SHARD_ATTRIBUTE,
                                             type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=REVOCATION_TASK_ATTRIBUTE,
                                        type=dynamodb.AttributeType.STRING),
            time_to_live_attribute=REVOCATION_EXPIRES_ATTRIBUTE)
        self.table.add_local_secondary_index(
            index_name=REVOCATIONS_LIVE_INDEX,
            sort_key=dynamodb.Attribute(name=REVOCATION_EXPIRES_ATTRIBUTE,
                                        type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY)
        self.table_name: str = table_name or self.table.table_name
        self.live_index_arn = f"{self.table.table_arn}/index/{REVOCATIONS_LIVE_INDEX}"

    def grant_read_revocations(self, grantee: iam.IGrantable) -> iam.Grant:
        """What a worker's reader needs: ``Query`` on the live index, nothing else."""
        self.encryption_key.grant(grantee, *KEY_READ_ACTIONS)
        return iam.Grant.add_to_principal(grantee=grantee, actions=["dynamodb:Query"],
                                          resource_arns=[self.live_index_arn])

    def grant_revoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """What ``runtime.revocation.revoke`` needs: ``PutItem`` of revocation entries
        only (the revocation partition, ``dynamodb:LeadingKeys``; the entry's three
        attributes, ``dynamodb:Attributes``); no update, delete or read."""
        self.encryption_key.grant(grantee, *KEY_READ_ACTIONS, *KEY_WRITE_ACTIONS)
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["dynamodb:PutItem"],
            resource_arns=[self.table.table_arn],
            conditions={"ForAllValues:StringEquals": {
                "dynamodb:LeadingKeys": [REVOCATION_SHARD],
                "dynamodb:Attributes": list(ENTRY_ATTRIBUTES)}})
