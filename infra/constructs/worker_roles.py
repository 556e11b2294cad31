"""The identities Celery workers run as: ECS task role, EC2 instance role and
profile, and STS-assumable roles that only the worker roles named for each may assume."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import rules
from runtime.errors import SpecError

ECS_TASKS = "ecs-tasks.amazonaws.com"
EC2 = "ec2.amazonaws.com"


class WorkerRoles(Construct):
    """Worker identities with no permissions of their own until granted.

    Props (keyword-only):

    - ``extra_trusted_principals`` (default none): IAM user or role ARNs of the
      stack's own account trusted besides the AWS service (an account root, a
      wildcard, another account's principal or an environment-agnostic stack raise
      :class:`SpecError`). Keep empty in production; a local emulator run needs its
      operator here because the emulator cannot act as ``ecs-tasks.amazonaws.com``.
    - ``max_session_duration`` (default 1 hour): 1..12 hours, for assumable roles.
    - ``external_id`` (default none): required ``sts:ExternalId`` on assumable roles.

    Attributes: ``task_role`` (trusts ``ecs-tasks.amazonaws.com``), ``instance_role``
    (trusts ``ec2.amazonaws.com``), ``instance_profile``, ``worker_roles`` (both).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        extra_trusted_principals: Sequence[str] = (),
        max_session_duration: Duration = Duration.hours(1),
        external_id: str | None = None,
    ) -> None:
        rules.check_max_session_duration("max_session_duration",
                                         max_session_duration.to_seconds(), Token.is_unresolved)
        rules.check_trusted_principals("extra_trusted_principals", extra_trusted_principals,
                                       account=Stack.of(scope).account,
                                       unresolved=Token.is_unresolved)
        super().__init__(scope, construct_id)
        self._extra = tuple(extra_trusted_principals)
        self._max_session_duration = max_session_duration
        self._external_id = external_id
        self.task_role = self._service_role("TaskRole", ECS_TASKS, "Celery worker ECS task role")
        self.instance_role = self._service_role("InstanceRole", EC2,
                                                "Celery worker EC2 instance role")
        self.instance_profile = iam.InstanceProfile(self, "InstanceProfile",
                                                    role=self.instance_role)
        self.worker_roles: tuple[iam.Role, ...] = (self.task_role, self.instance_role)

    def new_service_role(self, construct_id: str, *, description: str) -> iam.Role:
        """Another ECS task role (e.g. for the application tier that publishes tasks)."""
        return self._service_role(construct_id, ECS_TASKS, description)

    def new_assumable_role(self, construct_id: str, *, description: str,
                           trusted: Sequence[iam.Role] | None = None) -> iam.Role:
        """A role only ``trusted`` (default: both worker roles) may assume, through STS,
        with the ExternalId condition when one is configured; each of them gets
        ``sts:AssumeRole`` on it, and no other role does."""
        trusted = tuple(self.worker_roles if trusted is None else trusted)
        if not trusted or any(worker not in self.worker_roles for worker in trusted):
            raise SpecError("trusted", "must be one or more of the worker roles",
                            [worker.node.path for worker in trusted])
        principal: iam.IPrincipal = iam.ArnPrincipal(trusted[0].role_arn)
        if self._external_id is not None:
            principal = iam.PrincipalWithConditions(
                principal, {"StringEquals": {"sts:ExternalId": self._external_id}})
        role = iam.Role(self, construct_id, assumed_by=principal, description=description,
                        max_session_duration=self._max_session_duration)
        _trust_in_one_statement(role, [worker.role_arn for worker in trusted])
        for worker in trusted:
            worker.add_to_principal_policy(iam.PolicyStatement(
                actions=["sts:AssumeRole"], resources=[role.role_arn]))
        return role

    def _service_role(self, construct_id: str, service: str, description: str) -> iam.Role:
        role = iam.Role(self, construct_id, assumed_by=iam.ServicePrincipal(service),
                        description=description)
        if self._extra:
            _trust_in_one_statement(role, list(self._extra))
        return role


def _trust_in_one_statement(role: iam.Role, arns: list[str]) -> None:
    """Put ``arns`` in the first trust statement's ``Principal.AWS``.

    CDK renders a statement per principal unless the app sets minimizePolicies, and
    moto denies AssumeRole unless every statement about sts:AssumeRole matches, so
    the trust is written as one statement whatever the app's flags.
    """
    role.node.default_child.add_property_override(
        "AssumeRolePolicyDocument.Statement.0.Principal.AWS",
        arns[0] if len(arns) == 1 else arns)
