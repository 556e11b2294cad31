"""A CloudWatch log group encrypted with the kit's key, for workers and flow logs."""

from __future__ import annotations

import re

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

LOGS_KEY_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                    "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:DescribeKey")
"""What CloudWatch Logs asks of a log group's key."""

_NOT_IN_LOG_GROUP_NAMES = re.compile(r"[^A-Za-z0-9_./#-]")


def log_group_name(scope: Construct) -> str:
    """``/celery-sqs-kit/<construct path>``: known before deploy, so the key policy
    can name the log group without depending on it (which would be a cycle)."""
    return "/celery-sqs-kit/" + _NOT_IN_LOG_GROUP_NAMES.sub("-", scope.node.path)


def encrypted_log_group(scope: Construct, construct_id: str, *, encryption_key: kms.IKey,
                        retention: logs.RetentionDays) -> logs.LogGroup:
    """A log group in ``scope`` named by :func:`log_group_name`, encrypted with
    ``encryption_key``. When the key is made in this app, its policy lets CloudWatch
    Logs use it for this log group only (an imported key must already allow that).
    Removed with the stack: its name is fixed, so a retained group would block the
    next deploy of the same stack."""
    name = log_group_name(scope)
    arn = Stack.of(scope).format_arn(service="logs", resource="log-group", resource_name=name,
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME)
    encryption_key.add_to_resource_policy(iam.PolicyStatement(
        principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
        actions=list(LOGS_KEY_ACTIONS), resources=["*"],
        conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": arn}}))
    return logs.LogGroup(scope, construct_id, log_group_name=name, encryption_key=encryption_key,
                         retention=retention, removal_policy=RemovalPolicy.DESTROY)
