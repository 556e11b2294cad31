"""EcsWorkerService: the worker image as a Fargate service (non-root, read-only root with
a /tmp volume, the runtime's health check, a stop timeout), the kit's task role, an
encrypted log group, no ingress, scaling on backlog per task; props validated before
any resource exists."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk.assertions import Match, Template

from infra.constructs import CeleryQueue, EcsWorkerService, WorkerRoles
from runtime.errors import SpecError
from tests.unit.cdk_context import ROOT

IMAGE = "registry.example.com/celery-worker:1.4"
PARAMETER = "/celery-sqs-kit/Test/worker-config"


class Built:
    """A stack with two queues, the kit's roles and an EcsWorkerService."""

    def __init__(self, **props) -> None:
        self.stack = cdk.Stack(cdk.App(), "Ecs")
        self.queues = [CeleryQueue(self.stack, "Celery", queue_name="celery"),
                       CeleryQueue(self.stack, "Orders", queue_name="orders.fifo", fifo=True)]
        self.roles = WorkerRoles(self.stack, "Workers")
        self.service = EcsWorkerService(
            self.stack, "EcsWorkers", queues=self.queues, task_role=self.roles.task_role,
            config_parameter_name=PARAMETER, **{"image": IMAGE, **props})
        self.template = Template.from_stack(self.stack)

    def ref(self, token) -> object:
        return self.stack.resolve(token)


@pytest.fixture(scope="module")
def built() -> Built:
    return Built(concurrency=3, min_capacity=1, max_capacity=6)


def container(built: Built) -> dict:
    (definition,) = built.template.find_resources("AWS::ECS::TaskDefinition").values()
    (worker,) = definition["Properties"]["ContainerDefinitions"]
    return worker


def test_container_runs_the_image_as_10001_on_a_read_only_root_with_tmp_writable(built):
    worker = container(built)
    assert worker["Image"] == IMAGE
    assert worker["User"] == "10001:10001"
    assert worker["ReadonlyRootFilesystem"] is True
    assert worker["MountPoints"] == [{"ContainerPath": "/tmp", "SourceVolume": "scratch",
                                      "ReadOnly": False}]
    built.template.has_resource_properties("AWS::ECS::TaskDefinition", {
        "Volumes": [{"Name": "scratch"}], "RequiresCompatibilities": ["FARGATE"],
        "Cpu": "512", "Memory": "1024", "NetworkMode": "awsvpc"})


def test_container_runs_celery_worker_on_the_fleets_queues_with_its_concurrency(built):
    assert container(built)["Command"] == ["--loglevel=INFO", "--concurrency=3",
                                           "--queues=celery,orders.fifo"]


def test_container_reads_its_config_from_the_stacks_ssm_parameter_with_the_bundled_transport(
        built):
    environment = {e["Name"]: e["Value"] for e in container(built)["Environment"]}
    assert environment == {"CELERY_SQS_KIT_CONFIG": f"ssm:{PARAMETER}",
                           "CELERY_SQS_KIT_TRANSPORT": "bundled",
                           "AWS_REGION": {"Ref": "AWS::Region"},
                           "AWS_DEFAULT_REGION": {"Ref": "AWS::Region"}}


def test_container_health_check_asks_the_runtime_and_stop_timeout_covers_warm_shutdown(built):
    worker = container(built)
    assert worker["HealthCheck"] == {"Command": ["CMD", "python", "-m", "runtime.health"],
                                     "Interval": 30, "Timeout": 10, "StartPeriod": 60,
                                     "Retries": 3}
    assert worker["StopTimeout"] == 120


def test_task_runs_as_the_kits_task_role_and_logs_to_an_encrypted_retained_group(built):
    built.template.has_resource_properties("AWS::ECS::TaskDefinition", {
        "TaskRoleArn": built.ref(built.roles.task_role.role_arn)})
    assert container(built)["LogConfiguration"] == {
        "LogDriver": "awslogs",
        "Options": {"awslogs-group": built.ref(built.service.log_group.log_group_name),
                    "awslogs-stream-prefix": "worker", "awslogs-region": {"Ref": "AWS::Region"}}}
    built.template.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/celery-sqs-kit/Ecs/EcsWorkers", "RetentionInDays": 365,
        "KmsKeyId": Match.any_value()})


def test_task_role_may_protect_only_its_own_services_tasks_from_scale_in(built):
    """The task ARN names the cluster; the tag condition narrows it to this service's
    tasks (a shared cluster's other services are out of reach)."""
    tag = built.service.fleet_tag_value
    built.template.has_resource_properties("AWS::IAM::Policy", {
        "Roles": [built.ref(built.roles.task_role.role_name)],
        "PolicyDocument": {"Statement": Match.array_with([{
            "Action": ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
            "Effect": "Allow",
            "Condition": {"StringEquals": {"aws:ResourceTag/celery-sqs-kit:fleet": tag}},
            "Resource": built.ref(built.service.task_protection_arn)}])}})
    parts = built.ref(built.service.task_protection_arn)["Fn::Join"][1]
    assert parts[-3:] == [":task/", built.ref(built.service.cluster.cluster_name), "/*"]
    built.template.has_resource_properties("AWS::ECS::Service", {
        "PropagateTags": "SERVICE",
        "Tags": Match.array_with([{"Key": "celery-sqs-kit:fleet", "Value": tag}])})


def test_two_services_on_one_cluster_may_not_protect_each_others_tasks():
    stack = cdk.Stack(cdk.App(), "Shared")
    queues = [CeleryQueue(stack, "Celery", queue_name="celery")]
    cluster = ecs.Cluster(stack, "Cluster", vpc=ec2.Vpc(stack, "Vpc", max_azs=1))
    services = [EcsWorkerService(stack, f"Fleet{i}", queues=queues,
                                 task_role=WorkerRoles(stack, f"Workers{i}").task_role,
                                 config_parameter_name=PARAMETER, image=IMAGE, cluster=cluster)
                for i in (1, 2)]
    assert services[0].fleet_tag_value != services[1].fleet_tag_value


def test_execution_role_may_only_write_the_log_group_for_an_image_uri(built):
    execution = built.ref(built.service.task_definition.execution_role.role_name)
    (policy,) = [p for p in built.template.find_resources("AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [execution]]
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [{
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Effect": "Allow",
        "Resource": built.ref(built.service.log_group.log_group_arn)}]


def test_cluster_has_container_insights_for_the_running_task_count(built):
    built.template.has_resource_properties("AWS::ECS::Cluster", {
        "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]})


def test_service_runs_in_private_subnets_without_public_ip_and_leaves_the_count_to_scaling(
        built):
    (service,) = built.template.find_resources("AWS::ECS::Service").values()
    props = service["Properties"]
    assert "DesiredCount" not in props
    assert props["LaunchType"] == "FARGATE"
    network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    private = built.stack.resolve(built.service.cluster.vpc.select_subnets(
        subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnet_ids)
    assert network["Subnets"] == private
    assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True, "Rollback": True}


def test_security_group_has_no_ingress_and_https_egress_only(built):
    built.template.has_resource_properties("AWS::EC2::SecurityGroup", {
        "GroupDescription": "Celery workers: no ingress, HTTPS egress only",
        "SecurityGroupEgress": [Match.object_like({"CidrIp": "0.0.0.0/0", "IpProtocol": "tcp",
                                                   "FromPort": 443, "ToPort": 443})],
        "SecurityGroupIngress": Match.absent()})


def test_scalable_target_spans_min_to_max_tasks_with_the_ecs_service_linked_role(built):
    built.template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
        "MinCapacity": 1, "MaxCapacity": 6,
        "RoleARN": {"Fn::Join": ["", Match.array_with([Match.string_like_regexp(
            "AWSServiceRoleForApplicationAutoScaling_ECSService$")])]}})


def test_target_tracking_uses_running_task_count_and_the_derived_target(built):
    assert built.service.scaling.plan.target == 30  # concurrency 3 x prefetch 10
    built.template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "TargetValue": 30,
            "CustomizedMetricSpecification": {"Metrics": Match.array_with([{
                "Id": "workers", "ReturnData": False,
                "MetricStat": {"Stat": "Average", "Metric": {
                    "Namespace": "ECS/ContainerInsights", "MetricName": "RunningTaskCount",
                    "Dimensions": [
                        {"Name": "ClusterName",
                         "Value": built.ref(built.service.cluster.cluster_name)},
                        {"Name": "ServiceName",
                         "Value": built.ref(built.service.service.service_name)}]}}}])}})})


def test_an_explicit_target_replaces_the_derived_one():
    built = Built(target_backlog_per_worker=5)
    built.template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({"TargetValue": 5})})


def test_an_existing_cluster_is_used_and_no_network_is_made():
    stack = cdk.Stack(cdk.App(), "Existing")
    vpc = ec2.Vpc(stack, "TheirVpc", nat_gateways=1, max_azs=2)
    cluster = ecs.Cluster(stack, "TheirCluster", vpc=vpc,
                          container_insights_v2=ecs.ContainerInsights.ENABLED)
    service = EcsWorkerService(
        stack, "EcsWorkers", queues=[CeleryQueue(stack, "Celery", queue_name="celery")],
        task_role=WorkerRoles(stack, "Workers").task_role, image=IMAGE,
        config_parameter_name=PARAMETER, cluster=cluster)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::ECS::Cluster", 1)
    template.resource_count_is("AWS::EC2::VPC", 1)
    assert service.cluster is cluster


def test_an_image_asset_is_pulled_by_the_execution_role_from_its_repository_only():
    stack = cdk.Stack(cdk.App(), "Asset")
    asset = ecr_assets.DockerImageAsset(stack, "Image", directory=str(ROOT))
    service = EcsWorkerService(
        stack, "EcsWorkers", queues=[CeleryQueue(stack, "Celery", queue_name="celery")],
        task_role=WorkerRoles(stack, "Workers").task_role, image=asset,
        config_parameter_name=PARAMETER)
    template = Template.from_stack(stack)
    execution = stack.resolve(service.task_definition.execution_role.role_name)
    (policy,) = [p for p in template.find_resources("AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [execution]]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    pull = [s for s in statements if "ecr:BatchGetImage" in s["Action"]]
    token = [s for s in statements if s["Action"] == "ecr:GetAuthorizationToken"]
    assert len(pull) == 1
    assert pull[0]["Resource"] == stack.resolve(asset.repository.repository_arn)
    assert token == [{"Action": "ecr:GetAuthorizationToken", "Effect": "Allow", "Resource": "*"}]


BAD_PROPS = [
    ("cpu-not-fargate", dict(cpu=384), "cpu", "must be one of Fargate's CPU sizes", 384),
    ("memory-not-paired-with-cpu", dict(cpu=512, memory_limit_mib=512), "memory",
     "must be 1024..4096 MiB in steps of 1024 with cpu 512 (Fargate rule)", 512),
    ("stop-timeout-above-fargate-cap", dict(stop_timeout=Duration.seconds(121)), "stop_timeout",
     "must be 2..120 seconds (Fargate rule)", 121),
    ("min-above-max", dict(min_capacity=3, max_capacity=2), "max_capacity",
     "must be >= min_capacity (3)", 2),
    ("negative-min", dict(min_capacity=-1), "min_capacity", "must be 0..1000 workers", -1),
    ("no-concurrency", dict(concurrency=0), "concurrency", "must be 1..256 processes", 0),
    ("zero-target", dict(target_backlog_per_worker=0), "target_backlog_per_worker",
     "must be 1..100000 messages", 0),
]


@pytest.mark.parametrize("props, field, rule, value", [c[1:] for c in BAD_PROPS],
                         ids=[c[0] for c in BAD_PROPS])
def test_bad_props_are_refused_before_any_resource_exists(props, field, rule, value):
    stack = cdk.Stack(cdk.App(), "Bad")
    queue = CeleryQueue(stack, "Celery", queue_name="celery")
    role = WorkerRoles(stack, "Workers").task_role
    with pytest.raises(SpecError) as raised:
        EcsWorkerService(stack, "EcsWorkers", queues=[queue], task_role=role, image=IMAGE,
                         config_parameter_name=PARAMETER, **props)
    assert (raised.value.field, raised.value.value) == (field, value)
    assert rule in str(raised.value)
    assert stack.node.try_find_child("EcsWorkers") is None


def test_no_queue_is_refused():
    stack = cdk.Stack(cdk.App(), "NoQueue")
    with pytest.raises(SpecError, match="^queues must hold at least one CeleryQueue"):
        EcsWorkerService(stack, "EcsWorkers", queues=[],
                         task_role=WorkerRoles(stack, "Workers").task_role, image=IMAGE,
                         config_parameter_name=PARAMETER)


def test_unresolved_sizes_are_left_to_deploy_time():
    stack = cdk.Stack(cdk.App(), "Tokens")
    EcsWorkerService(
        stack, "EcsWorkers", queues=[CeleryQueue(stack, "Celery", queue_name="celery")],
        task_role=WorkerRoles(stack, "Workers").task_role, image=IMAGE,
        config_parameter_name=PARAMETER,
        max_capacity=cdk.Token.as_number(cdk.CfnParameter(stack, "Max", type="Number")))
