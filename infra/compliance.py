"""Compliance checks run by every synth: cdk-nag 3.x packs on CDK's policy-validation
framework, and the few findings this kit acknowledges, each with its reason.

A new finding fails ``cdk synth`` (and the unit test that synthesizes the app):
fix it, or add an acknowledgment here with a reason a security reviewer accepts.
The README's security section lists these acknowledgments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks
from constructs import IConstruct

from infra.constructs import Ec2WorkerFleet, EcsWorkerService


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
_REVOCATIONS_BACKUP_REASON = (
    "The revocations table holds short-lived entries (one per revoked task) that expire "
    "through TTL once the task can no longer run; point-in-time recovery is on. An AWS "
    "Backup plan would keep revocations beyond their use.")

_IGW_ROUTE_REASON = (
    "Only the public subnets route 0.0.0.0/0 to the internet gateway, and they hold only "
    "the NAT gateway: nothing launched there gets a public IP. Workers run in the private "
    "subnets, whose default route is the NAT gateway, and accept no inbound traffic. One "
    "NAT gateway is the cheapest egress to SQS, SSM, Logs and ECR (see "
    "infra/constructs/worker_network.py for the interface-endpoint alternative).")
_DEFAULT_SECURITY_GROUP_REASON = (
    "Nothing uses the VPC's default security group: every worker task and instance gets "
    "the kit's own group (no ingress, HTTPS egress only). Closing the default group takes "
    "CDK's Lambda-backed custom resource, a function outside the VPC with findings of its "
    "own, to remove rules no resource is subject to.")
_ENVIRONMENT_REASON = (
    "The container's environment holds no secret: the SSM parameter's name, the transport "
    "choice and the region. The worker reads the document itself through its task role "
    "(ssm:GetParameter on that one parameter), and the document never holds credentials.")
_SCALING_NOTIFICATIONS_REASON = (
    "Every launch and termination is already recorded, in the group's activity history "
    "and in CloudTrail, and the lifecycle hook drains each terminating worker. A "
    "notification topic nobody subscribes to would add an encrypted SNS topic and key "
    "grants for nothing; add one (AutoScalingGroup notifications) when someone reads it.")
_LIFECYCLE_REASON = (
    "The instance completes the termination lifecycle action of its own Auto Scaling "
    "group after the worker's warm shutdown. The group is named by the stack; the '*' is "
    "the group's UUID, which CloudFormation does not return, so no narrower ARN exists.")
_TASK_PROTECTION_REASON = (
    "A worker task protects itself from scale-in while it runs Celery tasks. Task ARNs "
    "are made when tasks start, so the grant names the fleet's own cluster and its "
    "tasks ('task/<cluster>/*'), never another cluster's.")
_ECR_TOKEN_REASON = (
    "ecr:GetAuthorizationToken has no resource-level permissions (AWS requires '*'); it "
    "only issues a registry login. Pulling is granted on the image asset's repository alone.")

ACKNOWLEDGMENTS: tuple[Acknowledged, ...] = (
    *(Acknowledged(f"{pack}::{pack}-IAMNoInlinePolicy", scope, _INLINE_POLICY_REASON)
      for pack in ("NIST.800.53.R5", "HIPAA.Security")
      for scope in ("Workers", "EcsWorkers", "Network")),
    *(Acknowledged(f"{pack}::{pack}-DynamoDBInBackupPlan", scope, reason)
      for pack in ("NIST.800.53.R5", "HIPAA.Security")
      for scope, reason in (("Results", _BACKUP_REASON),
                            ("Revocations", _REVOCATIONS_BACKUP_REASON))),
    *(Acknowledged(f"{pack}::{pack}-{rule}", "Network", reason)
      for pack in ("NIST.800.53.R5", "HIPAA.Security")
      for rule, reason in (("VPCNoUnrestrictedRouteToIGW", _IGW_ROUTE_REASON),
                           ("VPCDefaultSecurityGroupClosed", _DEFAULT_SECURITY_GROUP_REASON))),
    Acknowledged("AwsSolutions::AwsSolutions-ECS2", "EcsWorkers", _ENVIRONMENT_REASON),
    Acknowledged("AwsSolutions::AwsSolutions-AS3", "Ec2Workers", _SCALING_NOTIFICATIONS_REASON),
)
"""Rule-level acknowledgments by stack scope (applied where the scope exists)."""


def add_compliance_checks(app: App) -> None:
    """Register the packs that apply to SQS, IAM, KMS and DynamoDB."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app),
                                    HIPAASecurityChecks(app))


def acknowledgments(stack: Stack) -> tuple[Acknowledged, ...]:
    """What this stack acknowledges: :data:`ACKNOWLEDGMENTS` for the scopes it has,
    and one finding-level acknowledgment per wildcard its worker fleets need."""
    static = tuple(a for a in ACKNOWLEDGMENTS if _scope(stack, a.scope) is not None)
    return static + tuple(_fleet_wildcards(stack))


def acknowledge_findings(stack: Stack) -> None:
    for ack in acknowledgments(stack):
        Validations.of(_scope(stack, ack.scope)).acknowledge(
            Acknowledgment(id=ack.rule, reason=ack.reason))


def _fleet_wildcards(stack: Stack) -> Iterator[Acknowledged]:
    """AwsSolutions-IAM5 names each wildcard resource in its finding, so these are
    acknowledged one by one, on the role that holds them, never rule-wide."""
    for construct in stack.node.find_all():
        if isinstance(construct, Ec2WorkerFleet):
            role = _relative_path(stack, construct.instance_role)
            arn = _as_nag_renders(stack.resolve(construct.lifecycle_resource_arn))
            yield Acknowledged(f"AwsSolutions::AwsSolutions-IAM5[Resource::{arn}]", role,
                               _LIFECYCLE_REASON)
            if isinstance(construct.image, ecr_assets.DockerImageAsset):
                yield Acknowledged("AwsSolutions::AwsSolutions-IAM5[Resource::*]", role,
                                   _ECR_TOKEN_REASON)
        if isinstance(construct, EcsWorkerService):
            arn = _as_nag_renders(stack.resolve(construct.task_protection_arn))
            yield Acknowledged(f"AwsSolutions::AwsSolutions-IAM5[Resource::{arn}]",
                               _relative_path(stack, construct.task_definition.task_role),
                               _TASK_PROTECTION_REASON)
            if isinstance(construct.image, ecr_assets.DockerImageAsset):
                yield Acknowledged("AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                                   _relative_path(stack, construct.task_definition.execution_role),
                                   _ECR_TOKEN_REASON)


def _scope(stack: Stack, path: str) -> IConstruct | None:
    scope: IConstruct | None = stack
    for part in path.split("/"):
        scope = scope.node.try_find_child(part) if scope is not None else None
    return scope


def _relative_path(stack: Stack, construct: IConstruct) -> str:
    return construct.node.path[len(stack.node.path) + 1:]


def _as_nag_renders(value: Any) -> str:
    """A resolved CloudFormation value flattened as cdk-nag writes it in a finding:
    ``Fn::Join`` joined, ``Ref`` as ``<Name>``, ``Fn::GetAtt`` as ``<Name.Attribute>``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(_as_nag_renders(part) for part in parts)
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    raise ValueError(f"no cdk-nag rendering for {value!r}")
