"""Scaling on backlog per worker: the target derived from the spec, the two metric-math
expressions evaluated on sample backlogs the way CloudWatch and the two policies would,
and how BacklogScaling binds them to an ECS scalable target and to an Auto Scaling group."""

from __future__ import annotations

import math

import aws_cdk as cdk
import pytest
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Capture, Match, Template

from infra.backlog import (WORKERS_ID, BacklogPlan, in_flight_id, target_backlog_per_worker,
                           visible_id)
from infra.constructs import BacklogScaling
from infra.settings import load_spec
from runtime.celery_settings import BUNDLED_PREFETCH


class NoDatapoint(Exception):
    """CloudWatch returns no value for this period (here: a division by zero)."""


def evaluate(expression: str, metrics: dict[str, float | None]) -> float:
    """A CloudWatch metric-math expression over one period's values (``None``: the metric
    reported nothing). The kit's expressions use only + / == FILL IF, which read the same
    in Python once FILL and IF are functions."""
    namespace = {"FILL": lambda value, default: default if value is None else value,
                 "IF": lambda condition, then, otherwise: then if condition else otherwise,
                 **metrics}
    try:
        return eval(expression, {"__builtins__": {}}, namespace)  # noqa: S307 (test-only)
    except ZeroDivisionError:
        raise NoDatapoint(expression) from None
    except TypeError:  # a metric with no datapoint outside FILL
        raise NoDatapoint(expression) from None


def policies_settle_on(plan: BacklogPlan, visible: list[int], in_flight: list[int],
                       running: int) -> int:
    """What the two policies set, computed from the expressions alone: the scale-from-zero
    alarm's step (exactly 1) when its expression is above 0, else target tracking's
    ``ceil(current x metric / target)``, both clamped to min..max by Auto Scaling."""
    metrics = {WORKERS_ID: running,
               **{visible_id(i): v for i, v in enumerate(visible)},
               **{in_flight_id(i): f for i, f in enumerate(in_flight)}}
    if evaluate(plan.idle_with_backlog_expression, metrics) > 0:
        wanted = 1
    else:
        try:
            wanted = math.ceil(running * evaluate(plan.per_worker_expression, metrics)
                               / plan.target)
        except NoDatapoint:
            wanted = running  # target tracking does nothing without a datapoint
    return max(plan.min_capacity, min(plan.max_capacity, wanted))


# --- the target, derived from the spec ---------------------------------------------


def test_target_is_concurrency_times_the_bundled_prefetch_multiplier():
    assert BUNDLED_PREFETCH == 10
    assert target_backlog_per_worker(concurrency=4, prefetch_multiplier=BUNDLED_PREFETCH) == 40


def test_explicit_target_wins_over_the_derivation():
    assert target_backlog_per_worker(concurrency=4, prefetch_multiplier=10, explicit=7) == 7


def test_spec_fleets_derive_their_target_from_their_own_concurrency():
    spec = load_spec({"workers": {"ecs": {"concurrency": 3},
                                  "ec2": {"concurrency": 8, "target_backlog_per_worker": 5}}})
    assert spec.workers.ecs.target_backlog_per_worker == 30
    assert spec.workers.ec2.target_backlog_per_worker == 5


# --- the expressions ---------------------------------------------------------------


def test_expressions_sum_visible_and_in_flight_of_every_queue_per_running_worker():
    plan = BacklogPlan(queue_count=2, target=20, min_capacity=0, max_capacity=4)
    backlog = ("FILL(visible0, 0) + FILL(inflight0, 0) + "
               "FILL(visible1, 0) + FILL(inflight1, 0)")
    assert plan.backlog_expression == backlog
    assert plan.per_worker_expression == f"({backlog}) / workers"
    assert plan.idle_with_backlog_expression == f"IF(FILL(workers, 0) == 0, {backlog}, 0)"


def test_per_worker_metric_has_no_datapoint_with_no_worker_running():
    plan = BacklogPlan(queue_count=1, target=20, min_capacity=0, max_capacity=4)
    with pytest.raises(NoDatapoint):
        evaluate(plan.per_worker_expression, {"workers": 0, "visible0": 50, "inflight0": 0})


def test_a_queue_reporting_nothing_counts_as_empty():
    plan = BacklogPlan(queue_count=2, target=20, min_capacity=0, max_capacity=4)
    metrics = {"workers": 2, "visible0": 30, "inflight0": 10, "visible1": None, "inflight1": None}
    assert evaluate(plan.per_worker_expression, metrics) == 20


# backlog, running workers -> desired, at target 20 within 0..4 (the ECS default of the
# shipped spec: concurrency 2 x prefetch 10), split over two queues, half held in flight
SAMPLES = [
    (0, 0, 0), (1, 0, 1), (10, 0, 1), (1000, 0, 1),
    (0, 1, 0), (1, 1, 1), (10, 1, 1), (1000, 1, 4),
    (0, 4, 0), (1, 4, 1), (10, 4, 1), (40, 4, 2), (41, 4, 3), (1000, 4, 4),
]


@pytest.mark.parametrize("backlog, running, desired", SAMPLES,
                         ids=[f"backlog{b}-workers{r}" for b, r, _ in SAMPLES])
def test_policies_settle_on_the_plans_desired_count(backlog, running, desired):
    plan = BacklogPlan(queue_count=2, target=20, min_capacity=0, max_capacity=4)
    visible = [backlog // 2, backlog - backlog // 2 - backlog // 4]
    in_flight = [backlog // 4, 0]
    assert sum(visible) + sum(in_flight) == backlog
    assert policies_settle_on(plan, visible, in_flight, running) == desired
    assert plan.desired(backlog, running) == desired


@pytest.mark.parametrize("backlog, running, desired", [(0, 0, 1), (0, 3, 1), (10, 0, 1),
                                                       (1000, 3, 4), (1000, 0, 1)])
def test_min_capacity_keeps_workers_and_max_caps_them(backlog, running, desired):
    plan = BacklogPlan(queue_count=1, target=20, min_capacity=1, max_capacity=4)
    assert policies_settle_on(plan, [backlog], [0], running) == desired
    assert plan.desired(backlog, running) == desired


# --- BacklogScaling on the two kinds of target --------------------------------------


@pytest.fixture(scope="module")
def scaled() -> dict[str, Template]:
    stack = cdk.Stack(cdk.App(), "Scaled")
    queues = [sqs.Queue(stack, "Celery"), sqs.Queue(stack, "Reports")]
    plan = BacklogPlan(queue_count=2, target=20, min_capacity=0, max_capacity=4)
    workers = cloudwatch.Metric(namespace="Test", metric_name="Workers", statistic="Average")
    ecs_target = appscaling.ScalableTarget(
        stack, "EcsTarget", service_namespace=appscaling.ServiceNamespace.ECS,
        resource_id="service/cluster/service", scalable_dimension="ecs:service:DesiredCount",
        min_capacity=0, max_capacity=4)
    BacklogScaling(stack, "Ecs", plan=plan, queues=queues, workers=workers, target=ecs_target)
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0, subnet_configuration=[ec2.SubnetConfiguration(
        name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
    group = autoscaling.AutoScalingGroup(
        stack, "Group", vpc=vpc, min_capacity=0, max_capacity=4,
        instance_type=ec2.InstanceType("t3.small"),
        machine_image=ec2.MachineImage.latest_amazon_linux2023())
    BacklogScaling(stack, "Ec2", plan=plan, queues=queues, workers=workers, target=group)
    return Template.from_stack(stack)


def query_ids(metrics: list[dict]) -> list[str]:
    return [m["Id"] for m in metrics]


EXPECTED_IDS = ["workers", "visible0", "inflight0", "visible1", "inflight1", "backlogPerWorker"]


def test_ecs_target_tracking_holds_backlog_per_worker_at_the_target(scaled):
    metrics = Capture()
    scaled.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "ScalingTargetId": {"Ref": Match.string_like_regexp("^EcsTarget")},
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 20, "ScaleOutCooldown": 60, "ScaleInCooldown": 300,
            "CustomizedMetricSpecification": {"Metrics": metrics}}})
    assert query_ids(metrics.as_array()) == EXPECTED_IDS
    (returned,) = [m for m in metrics.as_array() if m.get("ReturnData")]
    assert returned["Expression"] == BacklogPlan(2, 20, 0, 4).per_worker_expression


def test_ec2_target_tracking_holds_backlog_per_worker_at_the_target(scaled):
    metrics = Capture()
    scaled.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingConfiguration": {
            "TargetValue": 20, "CustomizedMetricSpecification": {"Metrics": metrics}}})
    assert query_ids(metrics.as_array()) == EXPECTED_IDS


def test_target_tracking_reads_visible_and_in_flight_messages_of_each_queue(scaled):
    metrics = Capture()
    scaled.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "TargetTrackingConfiguration": {"CustomizedMetricSpecification": {"Metrics": metrics}}})
    by_id = {m["Id"]: m for m in metrics.as_array()}
    for i, queue in enumerate(["Celery", "Reports"]):
        for metric_id, name in ((visible_id(i), "ApproximateNumberOfMessagesVisible"),
                                (in_flight_id(i), "ApproximateNumberOfMessagesNotVisible")):
            stat = by_id[metric_id]["MetricStat"]
            assert stat["Stat"] == "Sum" and by_id[metric_id]["ReturnData"] is False
            assert stat["Metric"]["Namespace"] == "AWS/SQS"
            assert stat["Metric"]["MetricName"] == name
            (dimension,) = stat["Metric"]["Dimensions"]
            assert dimension["Value"]["Fn::GetAtt"][0].startswith(queue)
    assert by_id["workers"]["MetricStat"]["Metric"]["MetricName"] == "Workers"


def test_ecs_scale_from_zero_sets_exactly_one_task(scaled):
    scaled.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ExactCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]}})


def test_ec2_scale_from_zero_sets_exactly_one_instance(scaled):
    scaled.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "PolicyType": "StepScaling", "AdjustmentType": "ExactCapacity",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]})


@pytest.mark.parametrize("action_prefix", ["EcsStartFirstWorker", "Ec2StartFirstWorker"])
def test_alarm_fires_when_messages_wait_and_no_worker_runs(scaled, action_prefix):
    scaled.has_resource_properties("AWS::CloudWatch::Alarm", {
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0, "EvaluationPeriods": 1,
        "TreatMissingData": "notBreaching",
        "AlarmActions": [{"Ref": Match.string_like_regexp(f"^{action_prefix}")}],
        "Metrics": Match.array_with([Match.object_like({
            "Expression": BacklogPlan(2, 20, 0, 4).idle_with_backlog_expression,
            "ReturnData": True})])})
