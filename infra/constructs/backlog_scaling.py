"""Backlog-per-worker scaling (:mod:`infra.backlog`) bound to CloudWatch metrics,
for an ECS service's scalable target or an EC2 Auto Scaling group.

Two policies:

- target tracking on ``backlog / running workers`` at the plan's target. CDK
  2.275's L2 target tracking refuses metric math ("Only direct metrics are
  supported for Target Tracking"), while CloudFormation takes it
  (``CustomizedMetricSpecification.Metrics``); so the policy is the L1, and its
  metric queries are rendered from the very ``MathExpression`` the alarm below
  uses, by one function.
- a step policy that sets the count to exactly 1 when messages wait and no worker
  runs: target tracking cannot leave zero (see :mod:`infra.backlog`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from aws_cdk import Duration, Names
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.backlog import WORKERS_ID, BacklogPlan, in_flight_id, visible_id

PERIOD = Duration.minutes(1)
"""SQS, Container Insights and Auto Scaling group metrics all come once a minute."""
SCALE_OUT_COOLDOWN = Duration.minutes(1)
SCALE_IN_COOLDOWN = Duration.minutes(5)
"""Out fast when work piles up; in slowly, since a worker stopping gives back its
prefetched messages and may be needed again a minute later."""
PER_WORKER_ID = "backlogPerWorker"

ScalingTarget = Union[appscaling.ScalableTarget, autoscaling.AutoScalingGroup]


Policy = Union[type[appscaling.CfnScalingPolicy], type[autoscaling.CfnScalingPolicy]]
_METRIC_TYPES = {
    appscaling.CfnScalingPolicy: (appscaling.CfnScalingPolicy.TargetTrackingMetricProperty,
                                  appscaling.CfnScalingPolicy.TargetTrackingMetricDimensionProperty),
    autoscaling.CfnScalingPolicy: (autoscaling.CfnScalingPolicy.MetricProperty,
                                   autoscaling.CfnScalingPolicy.MetricDimensionProperty),
}
"""The two L1s name their metric and dimension types differently; the rest is alike."""


def metric_queries(expression: cloudwatch.MathExpression, policy: Policy) -> list[Any]:
    """``expression`` as ``policy``'s target tracking metric data queries: every
    metric it uses, then the expression itself, the one query returned."""
    metric_type, dimension_type = _METRIC_TYPES[policy]
    queries: list[Any] = []
    for metric_id, metric in expression.using_metrics.items():
        stat = metric.to_metric_config().metric_stat
        queries.append(policy.TargetTrackingMetricDataQueryProperty(
            id=metric_id, return_data=False,
            metric_stat=policy.TargetTrackingMetricStatProperty(
                stat=stat.statistic,
                metric=metric_type(namespace=stat.namespace, metric_name=stat.metric_name,
                                   dimensions=[dimension_type(name=d.name, value=d.value)
                                               for d in stat.dimensions or []]))))
    queries.append(policy.TargetTrackingMetricDataQueryProperty(
        id=PER_WORKER_ID, expression=expression.expression, label=expression.label,
        return_data=True))
    return queries


class BacklogScaling(Construct):
    """Scales ``target`` (an ECS scalable target or an Auto Scaling group) on the
    backlog of ``queues`` per running worker, as ``plan`` says.

    Props (keyword-only): ``plan`` (:class:`infra.backlog.BacklogPlan`),
    ``queues`` (the SQS queues the fleet consumes, in the plan's order),
    ``workers`` (the running-workers metric), ``target``.

    Attributes: ``plan``, ``per_worker`` and ``idle_with_backlog`` (the two
    ``MathExpression`` objects, for dashboards), ``target_tracking`` (the L1
    policy), ``scale_from_zero`` (the step action), ``scale_from_zero_alarm``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, plan: BacklogPlan,
                 queues: Sequence[sqs.IQueue], workers: cloudwatch.IMetric,
                 target: ScalingTarget) -> None:
        super().__init__(scope, construct_id)
        self.plan = plan
        using: dict[str, cloudwatch.IMetric] = {WORKERS_ID: workers}
        for i, queue in enumerate(queues):
            using[visible_id(i)] = queue.metric_approximate_number_of_messages_visible(
                statistic="Sum", period=PERIOD)
            using[in_flight_id(i)] = queue.metric_approximate_number_of_messages_not_visible(
                statistic="Sum", period=PERIOD)
        self.per_worker = cloudwatch.MathExpression(
            expression=plan.per_worker_expression, using_metrics=using, period=PERIOD,
            label="Messages waiting or held per running worker")
        self.idle_with_backlog = cloudwatch.MathExpression(
            expression=plan.idle_with_backlog_expression, using_metrics=using, period=PERIOD,
            label="Messages waiting while no worker runs")
        self.target_tracking = self._track(target)

        self.scale_from_zero = self._exactly_one_worker(target)
        self.scale_from_zero.add_adjustment(adjustment=1, lower_bound=0)
        self.scale_from_zero_alarm = cloudwatch.Alarm(
            self, "WorkWaitsWithNoWorker", metric=self.idle_with_backlog, threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="Messages wait and no worker runs: start one (target tracking "
                              "cannot scale out from zero workers)")
        self.scale_from_zero_alarm.add_alarm_action(
            cw_actions.ApplicationScalingAction(self.scale_from_zero)
            if isinstance(self.scale_from_zero, appscaling.StepScalingAction)
            else cw_actions.AutoScalingAction(self.scale_from_zero))

    def _track(self, target: ScalingTarget) -> appscaling.CfnScalingPolicy | \
            autoscaling.CfnScalingPolicy:
        if isinstance(target, autoscaling.AutoScalingGroup):
            policy = autoscaling.CfnScalingPolicy
            return policy(
                self, "TrackBacklogPerWorker", auto_scaling_group_name=target.auto_scaling_group_name,
                policy_type="TargetTrackingScaling",
                target_tracking_configuration=policy.TargetTrackingConfigurationProperty(
                    target_value=self.plan.target,
                    customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                        metrics=metric_queries(self.per_worker, policy))))
        policy = appscaling.CfnScalingPolicy
        return policy(
            self, "TrackBacklogPerWorker", policy_name=f"{Names.unique_id(self)}-backlog",
            policy_type="TargetTrackingScaling", scaling_target_id=target.scalable_target_id,
            target_tracking_scaling_policy_configuration=policy.TargetTrackingScalingPolicyConfigurationProperty(
                target_value=self.plan.target,
                scale_out_cooldown=int(SCALE_OUT_COOLDOWN.to_seconds()),
                scale_in_cooldown=int(SCALE_IN_COOLDOWN.to_seconds()),
                customized_metric_specification=policy.CustomizedMetricSpecificationProperty(
                    metrics=metric_queries(self.per_worker, policy))))

    def _exactly_one_worker(self, target: ScalingTarget) -> appscaling.StepScalingAction | \
            autoscaling.StepScalingAction:
        # EXACT_CAPACITY 1, not +1: the alarm stays on while the first worker starts,
        # and re-applying "1" is a no-op where "+1" would keep adding workers.
        if isinstance(target, autoscaling.AutoScalingGroup):
            return autoscaling.StepScalingAction(
                self, "StartFirstWorker", auto_scaling_group=target,
                adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
                metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM)
        return appscaling.StepScalingAction(
            self, "StartFirstWorker", scaling_target=target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
            cooldown=SCALE_OUT_COOLDOWN)
