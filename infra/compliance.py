"""Compliance checks run by every synth: cdk-nag 3.x packs on CDK's policy-validation
framework, and the few findings this kit acknowledges, each with its reason.

A new finding fails ``cdk synth`` (and the unit test that synthesizes the app):
fix it, or add an acknowledgment here with a reason a security reviewer accepts.
The README's security section lists these acknowledgments.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks


@dataclass(frozen=True)
class Acknowledged:
    rule: str
    """Validation rule id as ``Plugin::Rule``."""
    scope: str
    """Path of the construct (relative to the stack) the acknowledgment covers, with its children."""
    reason: str


_INLINE_POLICY_REASON = (
    "CDK grants write one AWS::IAM::Policy per role, attached to that role alone and "
    "created, versioned and deleted with it; its statements are the least-privilege set "
    "tested in tests/unit and enforced on the emulator. A customer-managed policy would "
    "add a reusable object that other principals could be attached to.")
_BACKUP_REASON = (
    "The result table holds Celery task results that expire through TTL (a day by "
    "default) and can be recomputed; point-in-time recovery is on. An AWS Backup plan "
    "would keep expired results beyond their TTL.")

ACKNOWLEDGMENTS: tuple[Acknowledged, ...] = (
    Acknowledged("NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy", "Workers",
                 _INLINE_POLICY_REASON),
    Acknowledged("HIPAA.Security::HIPAA.Security-IAMNoInlinePolicy", "Workers",
                 _INLINE_POLICY_REASON),
    Acknowledged("NIST.800.53.R5::NIST.800.53.R5-DynamoDBInBackupPlan", "Results",
                 _BACKUP_REASON),
    Acknowledged("HIPAA.Security::HIPAA.Security-DynamoDBInBackupPlan", "Results",
                 _BACKUP_REASON),
)


def add_compliance_checks(app: App) -> None:
    """Register the packs that apply to SQS, IAM, KMS and DynamoDB."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app),
                                    HIPAASecurityChecks(app))


def acknowledge_findings(stack: Stack) -> None:
    for ack in ACKNOWLEDGMENTS:
        scope = stack.node.try_find_child(ack.scope)
        if scope is not None:
            Validations.of(scope).acknowledge(Acknowledgment(id=ack.rule, reason=ack.reason))
