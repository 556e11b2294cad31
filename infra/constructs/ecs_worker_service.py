"""Celery workers as a Fargate service, scaled on backlog per worker."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Duration, Names, Stack, Tags, Token
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import rules
from infra.constructs.backlog_scaling import PERIOD, BacklogScaling
from infra.constructs.celery_queue import CeleryQueue
from infra.constructs.encrypted_log_group import encrypted_log_group
from infra.constructs.worker_network import WorkerNetwork
from infra.constructs.worker_runtime import (HEALTH_COMMAND, HEALTH_INTERVAL, HEALTH_RETRIES,
                                             HEALTH_START_PERIOD, HEALTH_TIMEOUT,
                                             PRIVATE_SUBNETS, SCRATCH_PATH, WORKER_USER,
                                             WorkerImage, backlog_plan, worker_command,
                                             worker_environment, worker_security_group)

SCRATCH_VOLUME = "scratch"
FLEET_TAG = "celery-sqs-kit:fleet"
"""Tagged on the service and propagated to its tasks: the task role may change the
scale-in protection of tasks carrying its own service's value only."""
ECS_SCALING_ROLE = ("aws-service-role/ecs.application-autoscaling.amazonaws.com/"
                    "AWSServiceRoleForApplicationAutoScaling_ECSService")
"""Application Auto Scaling's service-linked role for ECS, as ``auto_scale_task_count`` uses."""


class EcsWorkerService(Construct):
    """A Fargate service running the worker image, one ``celery worker`` per task.

    Props (keyword-only):

    - ``queues`` (required): the :class:`CeleryQueue` objects to consume and scale on.
    - ``task_role`` (required): the kit's ECS task role (``WorkerRoles.task_role``);
      the worker's credentials. An execution role (image pull, logs) is made.
    - ``image`` (required): an image URI, or a ``DockerImageAsset``.
    - ``config_parameter_name`` (required): the SSM parameter holding the worker
      configuration; the task role must be allowed to ``ssm:GetParameter`` it.
    - ``cluster`` (default: a new one, Container Insights on, in ``vpc``); ``vpc``
      (used only without a cluster; default: a new :class:`WorkerNetwork`). An
      existing cluster needs Container Insights: scaling reads
      ``ECS/ContainerInsights`` ``RunningTaskCount``.
    - ``vpc_subnets`` (default: the private subnets with egress): where tasks run.
      Isolated subnets work too if the VPC has endpoints for SQS, SSM, CloudWatch
      Logs and ECR (and an S3 gateway endpoint).
    - ``cpu`` (default 512) and ``memory_limit_mib`` (default 1024): a Fargate pair.
    - ``concurrency`` (default 2): ``celery worker --concurrency``.
    - ``target_backlog_per_worker`` (default ``concurrency x`` the bundled transport's
      prefetch multiplier, 10): messages per running task that scaling holds.
    - ``min_capacity`` (default 0), ``max_capacity`` (default 2): running tasks.
    - ``stop_timeout`` (default 120 s, Fargate's maximum): SIGTERM starts the warm
      shutdown; tasks still running at the end are killed and come back to SQS
      when their visibility timeout ends (within a minute at the bundled
      transport's default, ``infra.rules.BUNDLED_VISIBILITY_TIMEOUT``).
    - ``log_retention`` (default one year), ``encryption_key`` (default: a new
      customer-managed key with rotation on; encrypts the log group).
    - ``scaling`` (default true): false leaves out the scalable target and its
      policies (``scaling`` and ``scalable_target`` are then None), for an
      emulator without those resource types.

    The task role may set scale-in protection (``ecs:UpdateTaskProtection``,
    ``GetTaskProtection``) only on this cluster's tasks tagged with this service's
    ``celery-sqs-kit:fleet`` value (the service propagates its tags to its tasks).

    The container runs as 10001:10001 on a read-only root file system with one
    writable volume at ``/tmp`` (the health state file), and its health check is
    ``python -m runtime.health``. It has no ingress; egress is HTTPS only.

    Attributes: ``cluster``, ``task_definition``, ``container``, ``service``,
    ``log_group``, ``security_group``, ``scaling`` (:class:`BacklogScaling`,
    whose ``.plan`` holds the target), ``scalable_target``, ``image``,
    ``task_protection_arn`` and ``fleet_tag_value`` (the scope of the protection grant).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Sequence[CeleryQueue],
        task_role: iam.IRole,
        image: WorkerImage,
        config_parameter_name: str,
        cluster: ecs.ICluster | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        cpu: int = 512,
        memory_limit_mib: int = 1024,
        concurrency: int = 2,
        target_backlog_per_worker: int | None = None,
        min_capacity: int = 0,
        max_capacity: int = 2,
        stop_timeout: Duration = Duration.seconds(120),
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        encryption_key: kms.IKey | None = None,
        scaling: bool = True,
    ) -> None:
        plan = backlog_plan(len(queues), concurrency=concurrency,
                            target_backlog_per_worker=target_backlog_per_worker,
                            min_capacity=min_capacity, max_capacity=max_capacity)
        rules.check_fargate_size("", cpu=cpu, memory=memory_limit_mib,
                                 unresolved=Token.is_unresolved)
        rules.check_ecs_stop_timeout("stop_timeout", stop_timeout.to_seconds(),
                                     Token.is_unresolved)
        super().__init__(scope, construct_id)
        self.image = image
        key = encryption_key or kms.Key(self, "Key", enable_key_rotation=True,
                                        description="Encrypts the Celery workers' logs")
        if cluster is None:
            cluster = ecs.Cluster(self, "Cluster",
                                  vpc=vpc or WorkerNetwork(self, "Network", encryption_key=key).vpc,
                                  container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.cluster = cluster
        self.log_group = encrypted_log_group(self, "Logs", encryption_key=key,
                                             retention=log_retention)

        self.task_definition = ecs.FargateTaskDefinition(
            self, "TaskDefinition", cpu=cpu, memory_limit_mib=memory_limit_mib,
            task_role=task_role, runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX))
        # runtime.scale_in protects a task from scale-in while it runs Celery tasks, through
        # the ECS agent, which calls UpdateTaskProtection as the task role. IAM has no key
        # for "the calling task itself": the narrowest scope is this cluster's tasks
        # (resource) that carry this service's tag (aws:ResourceTag, on the task resource
        # type), so a shared cluster's other services are out of reach; sibling tasks of
        # this service are not (SECURITY.md, residual risks).
        self.fleet_tag_value = Names.unique_id(self)
        self.task_protection_arn = Stack.of(self).format_arn(
            service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME)
        task_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
            resources=[self.task_protection_arn],
            conditions={"StringEquals": {f"aws:ResourceTag/{FLEET_TAG}":
                                         self.fleet_tag_value}}))
        self.task_definition.add_volume(name=SCRATCH_VOLUME)
        self.container = self.task_definition.add_container(
            "Worker",
            image=_container_image(image),
            command=worker_command(concurrency=concurrency,
                                   queues=[q.queue_name for q in queues]),
            environment=worker_environment(config_parameter_name),
            user=WORKER_USER,
            readonly_root_filesystem=True,
            stop_timeout=stop_timeout,
            essential=True,
            health_check=ecs.HealthCheck(command=["CMD", *HEALTH_COMMAND],
                                         interval=HEALTH_INTERVAL, timeout=HEALTH_TIMEOUT,
                                         start_period=HEALTH_START_PERIOD,
                                         retries=HEALTH_RETRIES),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=self.log_group),
        )
        self.container.add_mount_points(ecs.MountPoint(
            container_path=SCRATCH_PATH, source_volume=SCRATCH_VOLUME, read_only=False))

        self.security_group = worker_security_group(self, "SecurityGroup", self.cluster.vpc)
        self.service = ecs.FargateService(
            self, "Service", cluster=self.cluster, task_definition=self.task_definition,
            security_groups=[self.security_group], assign_public_ip=False,
            vpc_subnets=vpc_subnets or PRIVATE_SUBNETS,
            min_healthy_percent=100, max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            propagate_tags=ecs.PropagatedTagSource.SERVICE)
        Tags.of(self.service).add(FLEET_TAG, self.fleet_tag_value)
        # Scaling owns the task count: a DesiredCount in the template would reset it on
        # every deploy. Without one, ECS starts a new service with 1 task.
        self.service.node.default_child.add_property_deletion_override("DesiredCount")
        self.scalable_target: appscaling.ScalableTarget | None = None
        self.scaling: BacklogScaling | None = None
        if not scaling:
            return

        self.scalable_target = appscaling.ScalableTarget(
            self, "ScalableTarget", service_namespace=appscaling.ServiceNamespace.ECS,
            resource_id=f"service/{self.cluster.cluster_name}/{self.service.service_name}",
            scalable_dimension="ecs:service:DesiredCount",
            min_capacity=min_capacity, max_capacity=max_capacity,
            role=iam.Role.from_role_arn(self, "ScalingRole", Stack.of(self).format_arn(
                service="iam", region="", resource="role", resource_name=ECS_SCALING_ROLE)))
        self.scaling = BacklogScaling(
            self, "Scaling",
            plan=plan,
            queues=[q.queue for q in queues],
            workers=cloudwatch.Metric(
                namespace="ECS/ContainerInsights", metric_name="RunningTaskCount",
                dimensions_map={"ClusterName": self.cluster.cluster_name,
                                "ServiceName": self.service.service_name},
                statistic="Average", period=PERIOD),
            target=self.scalable_target)


def _container_image(image: WorkerImage) -> ecs.ContainerImage:
    # From an asset, CDK grants the execution role the pull; a URI is pulled as given.
    return ecs.ContainerImage.from_registry(image) if isinstance(image, str) \
        else ecs.ContainerImage.from_docker_image_asset(image)
