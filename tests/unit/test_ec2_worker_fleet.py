"""Ec2WorkerFleet: a launch template (IMDSv2 only, hop limit 2, the kit's instance
profile, encrypted root, no public IP), user data that runs the worker image under
systemd and drains it on termination, an Auto Scaling group with a termination
lifecycle hook that outlasts the warm shutdown, least privilege for the instance
itself, scaling on backlog per instance; props validated before any resource exists."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk.assertions import Match, Template

from infra.constructs import CeleryQueue, Ec2WorkerFleet, WorkerRoles
from runtime.errors import SpecError
from tests.unit.cdk_context import ROOT

IMAGE = "registry.example.com/celery-worker:1.4"
PARAMETER = "/celery-sqs-kit/Test/worker-config"


def flat(value: Any) -> str:
    """A resolved CloudFormation string with its references as ``{Name}``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(flat(p) for p in parts)
    if "Ref" in value:
        return "{" + value["Ref"] + "}"
    if "Fn::GetAtt" in value:
        return "{" + ".".join(value["Fn::GetAtt"]) + "}"
    if "Fn::Sub" in value:
        return value["Fn::Sub"].replace("${", "{")
    raise ValueError(value)


class Built:
    """A stack with a queue, the kit's roles and an Ec2WorkerFleet."""

    def __init__(self, name: str = "Ec2", **props) -> None:
        self.stack = cdk.Stack(cdk.App(), name)
        self.queues = [CeleryQueue(self.stack, "Reports", queue_name="reports",
                                   visibility_timeout=Duration.hours(1),
                                   task_time_limit=Duration.minutes(50))]
        self.roles = WorkerRoles(self.stack, "Workers")
        self.fleet = Ec2WorkerFleet(
            self.stack, "Ec2Workers", queues=self.queues,
            instance_profile=self.roles.instance_profile, config_parameter_name=PARAMETER,
            **{"image": IMAGE, **props})
        self.template = Template.from_stack(self.stack)

    def ref(self, token) -> Any:
        return self.stack.resolve(token)

    @property
    def user_data(self) -> str:
        return flat(self.ref(self.fleet.launch_template.user_data.render()))

    @property
    def group_name(self) -> str:
        return self.fleet.auto_scaling_group.node.default_child.auto_scaling_group_name

    def instance_statements(self) -> list[dict]:
        role = self.ref(self.roles.instance_role.role_name)
        return [s for p in self.template.find_resources("AWS::IAM::Policy").values()
                if role in p["Properties"]["Roles"]
                for s in p["Properties"]["PolicyDocument"]["Statement"]]


@pytest.fixture(scope="module")
def built() -> Built:
    return Built(stop_timeout=Duration.minutes(50), concurrency=4, max_capacity=3)


def test_launch_template_requires_imdsv2_with_a_hop_for_the_container(built):
    built.template.has_resource_properties("AWS::EC2::LaunchTemplate", {"LaunchTemplateData": {
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2}}})


def test_launch_template_uses_the_kits_instance_profile_monitoring_and_an_encrypted_root(built):
    built.template.has_resource_properties("AWS::EC2::LaunchTemplate", {"LaunchTemplateData": {
        "IamInstanceProfile": {"Arn": built.ref(built.roles.instance_profile
                                                .instance_profile_arn)},
        "Monitoring": {"Enabled": True},
        "InstanceType": "t3.small",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {
            "Encrypted": True, "VolumeSize": 20, "VolumeType": "gp3"}}],
        "NetworkInterfaces": [Match.object_like({"AssociatePublicIpAddress": False})]}})


def test_launch_template_runs_amazon_linux_2023_resolved_at_deploy(built):
    parameters = built.template.to_json()["Parameters"]
    assert any(p["Default"] == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64"
               for p in parameters.values())


def test_arm_instances_get_the_arm_image():
    built = Built("Arm", instance_type=ec2.InstanceType("t4g.small"))
    parameters = built.template.to_json()["Parameters"]
    assert any(p["Default"].endswith("al2023-ami-kernel-6.1-arm64") for p in parameters.values())


def test_user_data_runs_the_image_as_10001_read_only_with_tmp_and_the_stop_timeout(built):
    (run,) = [line for line in built.user_data.splitlines()
              if line.startswith("ExecStart=/usr/bin/docker ")]
    assert run.startswith("ExecStart=/usr/bin/docker run --rm --name celery-worker "
                          "--user 10001:10001 --read-only --tmpfs /tmp:rw,nosuid,nodev "
                          "--stop-timeout 3000 --log-driver awslogs "
                          "--log-opt awslogs-region={AWS::Region} "
                          "--log-opt awslogs-group="
                          f"{flat(built.ref(built.fleet.log_group.log_group_name))} ")
    assert f'--env "CELERY_SQS_KIT_CONFIG=ssm:{PARAMETER}"' in run
    assert '--env "CELERY_SQS_KIT_TRANSPORT=bundled"' in run
    assert run.endswith(f"{IMAGE} --loglevel=INFO --concurrency=4 --queues=reports")
    assert "ExecStop=/usr/bin/docker stop --time 3000 celery-worker" in built.user_data
    assert "TimeoutStopSec=3030" in built.user_data
    assert "docker login" not in built.user_data  # an image URI needs no registry login


def test_user_data_drains_the_worker_then_completes_the_lifecycle_action(built):
    script = built.user_data
    polls = script.index('"$(imds autoscaling/target-lifecycle-state)" = Terminated')
    stops = script.index("systemctl stop celery-worker.service", polls)
    completes = script.index("aws autoscaling complete-lifecycle-action", stops)
    assert polls < stops < completes
    assert (f"--auto-scaling-group-name {built.group_name} "
            "--lifecycle-hook-name celery-worker-drain") in script
    assert "--lifecycle-action-result CONTINUE" in script
    assert "X-aws-ec2-metadata-token" in script  # IMDSv2: a token on every read
    assert "systemctl enable --now celery-worker.service celery-worker-drain.service" in script


def test_user_data_restarts_a_worker_its_health_check_calls_unhealthy(built):
    assert "{{.State.Health.Status}}" in built.user_data
    assert "= unhealthy ]; then\n    systemctl restart celery-worker.service" in built.user_data


def test_group_spans_min_to_max_in_private_subnets_and_reports_in_service_instances(built):
    private = built.ref(built.fleet.auto_scaling_group.node.scope.node.try_find_child(
        "Network").vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids)
    built.template.has_resource_properties("AWS::AutoScaling::AutoScalingGroup", {
        "AutoScalingGroupName": built.group_name, "MinSize": "0", "MaxSize": "3",
        "VPCZoneIdentifier": private, "HealthCheckType": "EC2",
        "MetricsCollection": [{"Granularity": "1Minute",
                               "Metrics": ["GroupInServiceInstances"]}]})


def test_termination_hook_outlasts_the_warm_shutdown_and_continues_by_default(built):
    built.template.has_resource_properties("AWS::AutoScaling::LifecycleHook", {
        "LifecycleHookName": "celery-worker-drain",
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "HeartbeatTimeout": 3060, "DefaultResult": "CONTINUE"})


def test_instance_may_complete_lifecycle_actions_on_its_own_group_only(built):
    (statement,) = [s for s in built.instance_statements()
                    if "autoscaling:CompleteLifecycleAction" in s["Action"]]
    assert statement["Action"] == "autoscaling:CompleteLifecycleAction"
    assert flat(statement["Resource"]) == (
        "arn:{AWS::Partition}:autoscaling:{AWS::Region}:{AWS::AccountId}:autoScalingGroup:*:"
        f"autoScalingGroupName/{built.group_name}")


def test_instance_may_write_its_log_group_and_nothing_else_for_an_image_uri(built):
    assert built.instance_statements() == [
        {"Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Effect": "Allow",
         "Resource": built.ref(built.fleet.log_group.log_group_arn)},
        {"Action": "autoscaling:CompleteLifecycleAction", "Effect": "Allow",
         "Resource": built.ref(built.fleet.lifecycle_resource_arn)}]


def test_target_tracking_uses_in_service_instances_and_the_derived_target(built):
    assert built.fleet.scaling.plan.target == 40  # concurrency 4 x prefetch 10
    built.template.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingConfiguration": {"TargetValue": 40, "CustomizedMetricSpecification": {
            "Metrics": Match.array_with([{
                "Id": "workers", "ReturnData": False,
                "MetricStat": {"Stat": "Average", "Metric": {
                    "Namespace": "AWS/AutoScaling", "MetricName": "GroupInServiceInstances",
                    "Dimensions": [{"Name": "AutoScalingGroupName",
                                    "Value": built.group_name}]}}}])}}})


def test_an_image_asset_logs_in_to_its_registry_and_is_pulled_from_its_repository_only():
    stack = cdk.Stack(cdk.App(), "Asset")
    asset = ecr_assets.DockerImageAsset(stack, "Image", directory=str(ROOT))
    roles = WorkerRoles(stack, "Workers")
    fleet = Ec2WorkerFleet(stack, "Ec2Workers",
                           queues=[CeleryQueue(stack, "Celery", queue_name="celery")],
                           instance_profile=roles.instance_profile, image=asset,
                           config_parameter_name=PARAMETER)
    user_data = flat(stack.resolve(fleet.launch_template.user_data.render()))
    assert ("ExecStartPre=/bin/sh -c 'aws ecr get-login-password --region {AWS::Region} | "
            "docker login --username AWS --password-stdin "
            "{AWS::AccountId}.dkr.ecr.{AWS::Region}.{AWS::URLSuffix}'") in user_data
    statements = [s for p in Template.from_stack(stack).find_resources("AWS::IAM::Policy")
                  .values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    (pull,) = [s for s in statements if "ecr:BatchGetImage" in s["Action"]]
    assert pull["Resource"] == stack.resolve(asset.repository.repository_arn)


BAD_PROPS = [
    ("stop-timeout-beyond-hook", dict(stop_timeout=Duration.seconds(7141)), "stop_timeout",
     "must be 1..7140 seconds (the termination hook waits stop_timeout + 60 s", 7141),
    ("min-above-max", dict(min_capacity=3, max_capacity=2), "max_capacity",
     "must be >= min_capacity (3)", 2),
    ("max-zero", dict(max_capacity=0), "max_capacity", "must be 1..1000 workers", 0),
    ("concurrency-too-high", dict(concurrency=257), "concurrency",
     "must be 1..256 processes", 257),
]


@pytest.mark.parametrize("props, field, rule, value", [c[1:] for c in BAD_PROPS],
                         ids=[c[0] for c in BAD_PROPS])
def test_bad_props_are_refused_before_any_resource_exists(props, field, rule, value):
    stack = cdk.Stack(cdk.App(), "Bad")
    queue = CeleryQueue(stack, "Celery", queue_name="celery")
    profile = WorkerRoles(stack, "Workers").instance_profile
    with pytest.raises(SpecError) as raised:
        Ec2WorkerFleet(stack, "Ec2Workers", queues=[queue], instance_profile=profile,
                       image=IMAGE, config_parameter_name=PARAMETER, **props)
    assert (raised.value.field, raised.value.value) == (field, value)
    assert rule in str(raised.value)
    assert stack.node.try_find_child("Ec2Workers") is None
