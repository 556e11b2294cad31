"""Celery workers on an EC2 Auto Scaling group, scaled on backlog per worker."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Aws, Duration, Names, Stack, Token
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import rules
from infra.constructs.backlog_scaling import PERIOD, BacklogScaling
from infra.constructs.celery_queue import CeleryQueue
from infra.constructs.encrypted_log_group import encrypted_log_group
from infra.constructs.worker_network import WorkerNetwork
from infra.constructs.worker_runtime import (PRIVATE_SUBNETS, WorkerImage, backlog_plan,
                                             grant_image_pull, image_uri, worker_command,
                                             worker_environment, worker_security_group)
from infra.constructs.worker_unit import worker_boot_commands
from runtime.ec2_lifecycle import DEFAULT_HOOK_NAME
from runtime.errors import SpecError

LIFECYCLE_HOOK_NAME = DEFAULT_HOOK_NAME
"""One name for the hook the fleet makes and the one runtime.ec2_lifecycle completes."""
LIFECYCLE_ACTIONS = ("autoscaling:CompleteLifecycleAction",)
ROOT_DEVICE = "/dev/xvda"
"""Amazon Linux 2023's root device."""
ROOT_VOLUME_GIB = 20


class Ec2WorkerFleet(Construct):
    """An Auto Scaling group of Amazon Linux 2023 instances, each running the worker
    image under systemd (:mod:`infra.constructs.worker_unit`).

    Props (keyword-only):

    - ``queues`` (required): the :class:`CeleryQueue` objects to consume and scale on.
    - ``instance_profile`` (required): the kit's (``WorkerRoles.instance_profile``);
      its role is the worker's identity, and is granted here what the instance
      itself does: write its log group, pull an asset image, and complete lifecycle
      actions on this group only.
    - ``image`` (required): an image URI, or a ``DockerImageAsset``.
    - ``config_parameter_name`` (required): as for :class:`EcsWorkerService`.
    - ``vpc`` (default: a new :class:`WorkerNetwork`) and ``vpc_subnets`` (default:
      its private subnets with egress). Isolated subnets need endpoints for SQS,
      SSM, CloudWatch Logs, ECR and Auto Scaling, and a package mirror for ``dnf``.
    - ``instance_type`` (default ``t3.small``); ``machine_image`` (default: the
      latest Amazon Linux 2023 for the instance type's architecture, resolved by
      CloudFormation from the public SSM parameter).
    - ``concurrency``, ``target_backlog_per_worker``, ``min_capacity``,
      ``max_capacity``: as for :class:`EcsWorkerService`; a worker is an instance.
    - ``stop_timeout`` (default 25 minutes, the kit's default task time limit):
      the warm-shutdown bound. The termination lifecycle hook holds a terminating
      instance for ``stop_timeout`` + 60 s (at most 7200 s) with default result
      ``CONTINUE``; the instance completes it as soon as the worker has stopped.
    - ``log_retention`` (default one year), ``encryption_key`` (default: a new
      customer-managed key with rotation on; encrypts the log group).
    - ``scaling`` (default true): false leaves out the scaling policies and the
      termination lifecycle hook (``scaling`` and ``lifecycle_hook`` are then
      None), for an emulator without those resource types.

    The launch template requires IMDSv2 with a hop limit of 2 (the container
    reaches the instance profile's credentials through the docker bridge), turns on
    detailed monitoring, encrypts the root volume, and gives no public IP.

    Attributes: ``launch_template``, ``auto_scaling_group``, ``lifecycle_hook``,
    ``log_group``, ``security_group``, ``scaling`` (:class:`BacklogScaling`),
    ``image``, ``instance_role``, ``lifecycle_resource_arn`` (what the role may
    complete lifecycle actions on: this group, by name).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Sequence[CeleryQueue],
        instance_profile: iam.IInstanceProfile,
        image: WorkerImage,
        config_parameter_name: str,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        instance_type: ec2.InstanceType = ec2.InstanceType("t3.small"),
        machine_image: ec2.IMachineImage | None = None,
        concurrency: int = 2,
        target_backlog_per_worker: int | None = None,
        min_capacity: int = 0,
        max_capacity: int = 2,
        stop_timeout: Duration = Duration.minutes(25),
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        encryption_key: kms.IKey | None = None,
        scaling: bool = True,
    ) -> None:
        plan = backlog_plan(len(queues), concurrency=concurrency,
                            target_backlog_per_worker=target_backlog_per_worker,
                            min_capacity=min_capacity, max_capacity=max_capacity)
        stop_seconds = stop_timeout.to_seconds()
        rules.check_ec2_stop_timeout("stop_timeout", stop_seconds, Token.is_unresolved)
        if instance_profile.role is None:
            raise SpecError("instance_profile", "must have a role (the worker's identity)",
                                  instance_profile.instance_profile_name)
        super().__init__(scope, construct_id)
        self.image = image
        self.instance_role = role = instance_profile.role
        key = encryption_key or kms.Key(self, "Key", enable_key_rotation=True,
                                        description="Encrypts the Celery workers' logs")
        vpc = vpc or WorkerNetwork(self, "Network", encryption_key=key).vpc
        self.log_group = encrypted_log_group(self, "Logs", encryption_key=key,
                                             retention=log_retention)
        self.log_group.grant_write(role)
        grant_image_pull(image, role)
        # Named here, not by CloudFormation: the instances' user data must name the
        # group, and a reference would make the group depend on its own launch template.
        group_name = Names.unique_resource_name(self, max_length=255, separator="-")

        user_data = ec2.UserData.for_linux()
        user_data.add_commands(*worker_boot_commands(
            image=image_uri(image),
            command=worker_command(concurrency=concurrency,
                                   queues=[q.queue_name for q in queues]),
            environment=worker_environment(config_parameter_name),
            stop_timeout=int(stop_seconds),
            log_group_name=self.log_group.log_group_name,
            registry_login=None if isinstance(image, str)
            else f"{Aws.ACCOUNT_ID}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}",
            auto_scaling_group_name=group_name,
            lifecycle_hook_name=LIFECYCLE_HOOK_NAME))

        self.security_group = worker_security_group(self, "SecurityGroup", vpc)
        self.launch_template = ec2.LaunchTemplate(
            self, "LaunchTemplate",
            instance_type=instance_type,
            machine_image=machine_image or ec2.MachineImage.latest_amazon_linux2023(
                cpu_type=ec2.AmazonLinuxCpuType.ARM_64
                if instance_type.architecture == ec2.InstanceArchitecture.ARM_64
                else ec2.AmazonLinuxCpuType.X86_64),
            instance_profile=instance_profile,
            user_data=user_data,
            security_group=self.security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=2,
            detailed_monitoring=True,
            associate_public_ip_address=False,
            block_devices=[ec2.BlockDevice(device_name=ROOT_DEVICE, volume=ec2.BlockDeviceVolume.ebs(
                ROOT_VOLUME_GIB, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3))],
        )
        self.auto_scaling_group = autoscaling.AutoScalingGroup(
            self, "Group", vpc=vpc, launch_template=self.launch_template,
            vpc_subnets=vpc_subnets or PRIVATE_SUBNETS,
            auto_scaling_group_name=group_name,
            min_capacity=min_capacity, max_capacity=max_capacity,
            group_metrics=[autoscaling.GroupMetrics(autoscaling.GroupMetric.IN_SERVICE_INSTANCES)],
            health_checks=autoscaling.HealthChecks.ec2(grace_period=Duration.minutes(5)))
        # The group's ARN holds a UUID CloudFormation does not return; its name is ours.
        self.lifecycle_resource_arn = Stack.of(self).format_arn(
            service="autoscaling", resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{group_name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)
        # The narrowest scope IAM offers: CompleteLifecycleAction's one resource type is the
        # group, and its condition keys are the group's tags; no key names the instance in
        # the request, so an instance (or any container on it: they reach the instance
        # profile through IMDS) may complete a sibling's action too (SECURITY.md).
        iam.Grant.add_to_principal(grantee=role, actions=list(LIFECYCLE_ACTIONS),
                                   resource_arns=[self.lifecycle_resource_arn])
        self.lifecycle_hook: autoscaling.LifecycleHook | None = None
        self.scaling: BacklogScaling | None = None
        if not scaling:
            return

        self.lifecycle_hook = self.auto_scaling_group.add_lifecycle_hook(
            "DrainWorker", lifecycle_hook_name=LIFECYCLE_HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=Duration.seconds(stop_seconds + rules.TERMINATION_HOOK_SLACK),
            default_result=autoscaling.DefaultResult.CONTINUE)
        self.scaling = BacklogScaling(
            self, "Scaling", plan=plan, queues=[q.queue for q in queues],
            workers=cloudwatch.Metric(
                namespace="AWS/AutoScaling", metric_name="GroupInServiceInstances",
                dimensions_map={"AutoScalingGroupName": group_name},
                statistic="Average", period=PERIOD),
            target=self.auto_scaling_group)
