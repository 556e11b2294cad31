"""One stack for a Celery fleet: queues, worker roles, result table, emitted config."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_cdk import CfnOutput, Duration, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.constructs import (CeleryQueue, QueueAlarms, ResultTable, RevocationTable,
                              WorkerRoles)
from infra.constructs.worker_network import AZ_COUNT
from infra.settings import FLEET_NAMES, KitSpec
from infra.stacks.worker_config import worker_config_document
from infra.stacks.worker_fleets import worker_fleets
from runtime.errors import SpecError
from runtime.schema import OUTPUT_KEY

_TOKEN = re.compile(r"\$\{Token\[[^\]]+\]\}")


STANDARD_PARAMETER_LIMIT = 4096
ADVANCED_PARAMETER_LIMIT = 8192
TOKEN_ALLOWANCE = 200
"""Characters allowed for each deploy-time value (queue URL, ARN, table name): real
ones are shorter (an SQS URL is at most ~140), so the estimate errs towards Advanced."""


def parameter_tier(document: dict[str, Any]) -> ssm.ParameterTier:
    """The cheapest SSM tier that holds the document once CloudFormation fills it in."""
    text = json.dumps(document, separators=(",", ":"))
    size = len(_TOKEN.sub("x" * TOKEN_ALLOWANCE, text))
    if size <= STANDARD_PARAMETER_LIMIT:
        return ssm.ParameterTier.STANDARD
    if size <= ADVANCED_PARAMETER_LIMIT:
        return ssm.ParameterTier.ADVANCED
    raise SpecError("celery_sqs_kit.queues", f"must describe a worker configuration of at most "
                    f"{ADVANCED_PARAMETER_LIMIT} characters (SSM rule); fewer queues or "
                    "routes per stack", size)


class CeleryKitStack(Stack):
    """Everything a Celery fleet on SQS needs, from one :class:`KitSpec`.

    Attributes: ``spec``, ``key`` (one customer-managed key for queues and
    results), ``roles`` (:class:`WorkerRoles`), ``identities`` (fleet name -> its
    worker role), ``broker_roles`` (the fleets sharing queues -> their STS role),
    ``broker_role`` (the one for queues every fleet consumes, or ``None``),
    ``dedicated_roles`` (per-queue STS roles), ``producer_role``
    (or ``None``), ``queues`` (name -> :class:`CeleryQueue`), ``results``
    (:class:`ResultTable` or ``None``), ``revocations`` (:class:`RevocationTable`, made
    with the result table, else ``None``), ``config_parameter``, ``worker_config``
    (the document, with Tokens), ``fleets`` (:class:`WorkerFleets`: the VPC, the
    ECS service and the EC2 group the spec's ``workers`` block asks for), ``alarms``
    (:class:`QueueAlarms`: topic, per-queue alarms, dashboard; ``None`` when the
    spec's ``alarms.enabled`` is false).

    Who may do what: a queue is consumed by the principal that holds its access
    (its dedicated role, else the broker role of the fleets that consume it, else
    those fleets' identities themselves: see ``infra.settings``); that principal
    may also send to it unless ``workers_send`` is false, and move its messages to
    its DLQ. An STS role is assumable only by the identities of the fleets that
    consume its queues. The producer role may send to every queue and read results.
    Revocations: the producer role may only put revocation entries, the worker roles
    may only query the live ones (:meth:`_grant_revocations`).
    """

    def __init__(self, scope: Construct, construct_id: str, *, spec: KitSpec,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.spec = spec
        self.key = kms.Key(self, "Key", enable_key_rotation=True,
                           description=f"{spec.stack_name}: Celery queues and task results")
        self.roles = WorkerRoles(
            self, "Workers",
            extra_trusted_principals=spec.extra_trusted_principals,
            max_session_duration=Duration.seconds(spec.sts.max_session_duration),
            external_id=spec.sts.external_id,
        )
        self.identities: dict[str, iam.Role] = dict(zip(FLEET_NAMES, self.roles.worker_roles))
        self.broker_roles: dict[tuple[str, ...], iam.Role] = {}
        self.producer_role = (self.roles.new_service_role(
            "ProducerRole", description="Application tier: sends Celery tasks, reads results")
            if spec.producer_role else None)

        self.queues: dict[str, CeleryQueue] = {}
        self.dedicated_roles: dict[str, iam.Role] = {}
        for q in spec.queues:
            queue = self.queues[q.name] = CeleryQueue(
                self, f"Queue-{q.name}",
                queue_name=q.name,
                fifo=q.fifo,
                content_based_deduplication=q.content_based_deduplication,
                transport=spec.transport,
                visibility_timeout=Duration.seconds(q.visibility_timeout),
                receive_wait_time=Duration.seconds(q.receive_wait_time),
                retention_period=Duration.seconds(q.retention_period),
                max_message_size_bytes=q.max_message_size_bytes,
                dead_letter_queue=q.dead_letter_queue,
                max_receive_count=q.max_receive_count,
                dead_letter_retention_period=Duration.seconds(q.dead_letter_retention_period),
                backoff_policy=q.backoff_policy,
                task_time_limit=Duration.seconds(q.task_time_limit),
                max_countdown=Duration.seconds(q.max_countdown),
                encryption_key=self.key,
            )
            if q.dedicated_role:
                self.dedicated_roles[q.name] = self.roles.new_assumable_role(
                    f"QueueRole-{q.name}", description=f"Celery access to queue {q.name} only",
                    trusted=self._users(q.name))
            for holder in self._access_holders(q.name):
                queue.grant_consume(holder)
                if q.workers_send:
                    queue.grant_send(holder)
            if self.producer_role is not None:
                queue.grant_send(self.producer_role)

        self.results = ResultTable(self, "Results", encryption_key=self.key) \
            if spec.result_backend.enabled else None
        if self.results is not None:
            # Celery's result backend uses the base credentials, never the STS role.
            for role in self.roles.worker_roles:
                self.results.grant_write_results(role)
            if self.producer_role is not None:
                self.results.grant_read_results(self.producer_role)
        # Named after the stack, like its queues: a name known at synth keeps the emitted
        # document's size exact (a deploy-time name is estimated at TOKEN_ALLOWANCE).
        self.revocations = RevocationTable(
            self, "Revocations", table_name=f"{self.stack_name}-revocations",
            encryption_key=self.key) if spec.result_backend.enabled else None
        self._grant_revocations()

        self.broker_role = self.broker_roles.get(FLEET_NAMES)
        self.worker_config = worker_config_document(
            spec, queues=self.queues, queue_roles={
                q.name: role for q in spec.queues
                if (role := self._assumed_role(q.name)) not in (None, self.broker_role)},
            broker_role=self.broker_role, results=self.results, revocations=self.revocations)
        config_json = self.to_json_string(self.worker_config)
        self.config_parameter = ssm.StringParameter(
            self, "WorkerConfigParameter",
            parameter_name=spec.config_parameter_name,
            string_value=config_json,
            description="celery-sqs-kit worker configuration (no credentials)",
            tier=parameter_tier(self.worker_config),
        )
        for role in (*self.roles.worker_roles, *filter(None, [self.producer_role])):
            # Only GetParameter: CDK's grant_read adds DescribeParameters and history.
            iam.Grant.add_to_principal(grantee=role, actions=["ssm:GetParameter"],
                                       resource_arns=[self.config_parameter.parameter_arn])

        self.fleets = worker_fleets(self, spec.workers, queues=self.queues, roles=self.roles,
                                    config_parameter_name=spec.config_parameter_name,
                                    key=self.key)

        self.alarms = QueueAlarms(
            self, "Alarms", queues=list(self.queues.values()),
            max_message_age={q.name: q.max_message_age for q in spec.queues},
            encryption_key=self.key, email=spec.alarms.email,
            no_consumer_minutes=spec.alarms.no_consumer_minutes,
            receive_errors=spec.alarms.receive_errors) if spec.alarms.enabled else None

        CfnOutput(self, OUTPUT_KEY, value=config_json,
                  description="Worker configuration document (runtime.config)")
        CfnOutput(self, "ConfigParameterName", value=self.config_parameter.parameter_name)
        CfnOutput(self, "TaskRoleArn", value=self.roles.task_role.role_arn)
        CfnOutput(self, "InstanceRoleArn", value=self.roles.instance_role.role_arn)
        CfnOutput(self, "InstanceProfileArn",
                  value=self.roles.instance_profile.instance_profile_arn)
        if self.producer_role is not None:
            CfnOutput(self, "ProducerRoleArn", value=self.producer_role.role_arn)
        for consumers, role in self.broker_roles.items():
            CfnOutput(self, f"{_broker_id(consumers)}Arn", value=role.role_arn)
        if self.alarms is not None:
            CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn)
            CfnOutput(self, "DashboardName", value=self.alarms.dashboard.dashboard_name)
        if self.fleets.ecs is not None:
            CfnOutput(self, "EcsClusterName", value=self.fleets.ecs.cluster.cluster_name)
            CfnOutput(self, "EcsServiceName", value=self.fleets.ecs.service.service_name)
        if self.fleets.ec2 is not None:
            CfnOutput(self, "AutoScalingGroupName",
                      value=self.fleets.ec2.auto_scaling_group.auto_scaling_group_name)

    @property
    def availability_zones(self) -> list[str]:
        """The region's first AZs as CloudFormation sees them (``Fn::GetAZs``), so the
        worker VPC needs no lookup at synth: no credentials, no cdk.context.json, and
        the same template for every account."""
        return [Fn.select(i, Fn.get_azs()) for i in range(AZ_COUNT)]

    def _grant_revocations(self) -> None:
        """Workers read revocations (the base roles, like results: never the STS role);
        only the producer writes them. No worker may write or delete one, so a
        compromised worker cannot lift or forge a revocation."""
        if self.revocations is None:
            return
        for role in self.roles.worker_roles:
            self.revocations.grant_read_revocations(role)
        if self.producer_role is not None:
            self.revocations.grant_revoke(self.producer_role)

    def _users(self, queue_name: str) -> tuple[iam.Role, ...]:
        """The worker identities of the fleets that consume the queue."""
        return tuple(self.identities[f] for f in self.spec.workers.consumers(queue_name))

    def _assumed_role(self, queue_name: str) -> iam.Role | None:
        """The STS role that holds the queue's access, made on first use: its dedicated
        role, else the broker role of exactly the fleets that consume it; ``None``
        without STS or when no fleet consumes the queue."""
        if queue_name in self.dedicated_roles:
            return self.dedicated_roles[queue_name]
        consumers = self.spec.workers.consumers(queue_name)
        if not self.spec.sts.enabled or not consumers:
            return None
        if consumers not in self.broker_roles:
            fleets = "worker roles" if consumers == FLEET_NAMES else \
                f"the {consumers[0].upper()} fleet's role"
            self.broker_roles[consumers] = self.roles.new_assumable_role(
                _broker_id(consumers), trusted=self._users(queue_name),
                description=f"Celery broker access, assumed by {fleets} via STS")
        return self.broker_roles[consumers]

    def _access_holders(self, queue_name: str) -> tuple[iam.IRole, ...]:
        """Who holds the queue's consume (and send) access: its STS role, else the
        identities of the fleets that consume it (none when no fleet does)."""
        role = self._assumed_role(queue_name)
        return (role,) if role is not None else self._users(queue_name)


def _broker_id(consumers: tuple[str, ...]) -> str:
    """``BrokerRole`` for queues every fleet consumes, ``BrokerRoleEcs``/``BrokerRoleEc2``
    for one fleet's own."""
    return "BrokerRole" if consumers == FLEET_NAMES else \
        "BrokerRole" + "".join(f.capitalize() for f in consumers)
