"""Alarms and a dashboard for Celery queues: an encrypted, TLS-only SNS topic, four
alarms per queue, one dashboard for them all.

Per queue (metric, threshold, why):

- ``dead_letters``: the DLQ's ApproximateNumberOfMessagesVisible (Maximum, 5 min)
  > 0. A dead letter is a task that will not run unless someone redrives it.
  Missing data keeps the alarm's state: SQS stops reporting a queue that is idle
  for hours, and a DLQ that still holds a message is still worth the alarm.
- ``oldest_message``: ApproximateAgeOfOldestMessage (Maximum, 1 min) >
  ``max_message_age`` (the spec's, else :func:`infra.rules.message_age_threshold`).
- ``receive_errors``: the workers' ``CelerySqsKit/ReceiveErrors`` EMF metric
  (:mod:`runtime.metrics`; Sum, 5 min) > ``receive_errors``; no data is fine
  (no worker running).
- ``no_consumer``: ``IF(visible > 0 AND FILL(received, 0) == 0, 1, 0)`` over
  one-minute periods, with visible the Minimum of ApproximateNumberOfMessagesVisible
  (messages waited the whole minute) and received the Sum of
  NumberOfMessagesReceived, true for ``no_consumer_minutes`` minutes in a row:
  work waits and nobody takes it (no worker, a wrong ``-Q``, a broken role).

Every alarm notifies the topic on ALARM and on OK. The topic's policy allows
``cloudwatch.amazonaws.com`` to publish for these alarms only (``aws:SourceArn`` = their
ARNs, ``aws:SourceAccount`` = the stack's account) and denies any request without TLS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import ArnFormat, Aws, Duration, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra import rules
from infra.constructs.celery_queue import CeleryQueue
from runtime import metrics

MINUTE = Duration.minutes(1)
FIVE_MINUTES = Duration.minutes(5)
ALARM_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey*")
"""What CloudWatch asks of an SNS topic's key to publish an alarm to it."""


def worker_metric(queue_name: str, metric_name: str, statistic: str,
                  period: Duration = FIVE_MINUTES) -> cloudwatch.Metric:
    """One of :mod:`runtime.metrics`' EMF metrics for one queue."""
    return cloudwatch.Metric(namespace=metrics.NAMESPACE, metric_name=metric_name,
                             dimensions_map={metrics.DIMENSION: queue_name},
                             statistic=statistic, period=period)


class QueueAlarms(Construct):
    """Alarms on ``queues`` to an SNS topic, and a dashboard of them.

    Props (keyword-only): ``queues`` (:class:`CeleryQueue` s), ``max_message_age``
    (queue name -> seconds, 60..1209600, one per queue), ``encryption_key`` (the
    topic's key; its policy gains CloudWatch's use of it for this account's alarms),
    ``email`` (default none: an address subscribed to the topic),
    ``no_consumer_minutes`` (default 15, 5..1440), ``receive_errors`` (default 5,
    0..100000 per 5 minutes).

    Attributes: ``topic``, ``alarms`` (queue name -> {``dead_letters`` (absent
    without a DLQ), ``oldest_message``, ``receive_errors``, ``no_consumer``} ->
    :class:`~aws_cdk.aws_cloudwatch.Alarm`), ``dashboard``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, queues: Sequence[CeleryQueue],
                 max_message_age: Mapping[str, int], encryption_key: kms.IKey,
                 email: str | None = None, no_consumer_minutes: int = 15,
                 receive_errors: int = 5) -> None:
        rules.check_alarms("", no_consumer_minutes=no_consumer_minutes,
                           receive_errors=receive_errors, unresolved=Token.is_unresolved)
        for queue in queues:
            rules.check_range(f"max_message_age[{queue.queue_name}]",
                              max_message_age.get(queue.queue_name), 60, rules.MAX_RETENTION,
                              "seconds", Token.is_unresolved)
        super().__init__(scope, construct_id)
        encryption_key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=list(ALARM_KEY_ACTIONS), resources=["*"],
            conditions={"ArnLike": {"aws:SourceArn": Stack.of(self).format_arn(
                service="cloudwatch", resource="alarm", resource_name="*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME)}, "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}))
        self.topic = sns.Topic(self, "Topic", master_key=encryption_key, enforce_ssl=True,
                               display_name=f"{Stack.of(self).stack_name} Celery alarms")
        if email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, dict[str, cloudwatch.Alarm]] = {}
        for queue in queues:
            made = self.alarms[queue.queue_name] = self._queue_alarms(
                queue, max_message_age[queue.queue_name], no_consumer_minutes, receive_errors)
            for alarm in made.values():
                alarm.add_alarm_action(action)
                alarm.add_ok_action(action)
        # A topic policy replaces SNS's default one (which lets the account's principals
        # publish), and enforce_ssl's holds only a Deny: without this Allow, CloudWatch,
        # a service principal, would be refused sns:Publish and every alarm would notify
        # no one. Scoped to these alarms of this account (the confused-deputy keys).
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"], resources=[self.topic.topic_arn],
            conditions={"ArnEquals": {"aws:SourceArn": [
                alarm.alarm_arn for made in self.alarms.values() for alarm in made.values()]},
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}))
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", widgets=_widgets(queues))

    def _queue_alarms(self, celery_queue: CeleryQueue, max_age: int, no_consumer_minutes: int,
                      receive_errors: int) -> dict[str, cloudwatch.Alarm]:
        name, queue = celery_queue.queue_name, celery_queue.queue
        above = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        made: dict[str, cloudwatch.Alarm] = {}
        if celery_queue.dead_letter_queue is not None:
            made["dead_letters"] = cloudwatch.Alarm(
                self, f"DeadLetters-{name}", threshold=0, comparison_operator=above,
                metric=celery_queue.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=FIVE_MINUTES),
                evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.MISSING,
                alarm_description=f"Queue {name}: messages wait in its dead-letter queue "
                                  "(python -m runtime.ops dlq peek / redrive)")
        made["oldest_message"] = cloudwatch.Alarm(
            self, f"OldestMessage-{name}", threshold=max_age, comparison_operator=above,
            metric=queue.metric_approximate_age_of_oldest_message(statistic="Maximum",
                                                                  period=MINUTE),
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Queue {name}: a message is older than {max_age} s, longer "
                              "than a healthy one lives (too few workers, or stuck)")
        made["receive_errors"] = cloudwatch.Alarm(
            self, f"ReceiveErrors-{name}", threshold=receive_errors, comparison_operator=above,
            metric=worker_metric(name, metrics.RECEIVE_ERRORS, "Sum"), evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Queue {name}: workers' ReceiveMessage calls fail (see "
                              "ReceiveErrorTypes in their EMF lines)")
        made["no_consumer"] = cloudwatch.Alarm(
            self, f"NoConsumer-{name}", threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            metric=cloudwatch.MathExpression(
                expression="IF(visible > 0 AND FILL(received, 0) == 0, 1, 0)", period=MINUTE,
                label="Messages wait and none is received",
                using_metrics={
                    "visible": queue.metric_approximate_number_of_messages_visible(
                        statistic="Minimum", period=MINUTE),
                    "received": queue.metric_number_of_messages_received(
                        statistic="Sum", period=MINUTE)}),
            evaluation_periods=no_consumer_minutes, datapoints_to_alarm=no_consumer_minutes,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Queue {name}: messages wait and no worker has received one "
                              f"for {no_consumer_minutes} minutes")
        return made


def _widgets(queues: Sequence[CeleryQueue]) -> list[list[cloudwatch.IWidget]]:
    def graph(title: str, lines: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(title=title, left=lines, width=8)

    def per_queue(make) -> list[cloudwatch.IMetric]:
        return [make(q).with_(label=q.queue_name) for q in queues]

    tasks = [worker_metric(q.queue_name, name, "Sum", MINUTE).with_(label=f"{q.queue_name} {what}")
             for q in queues for name, what in ((metrics.TASKS_SUCCEEDED, "succeeded"),
                                                (metrics.TASKS_FAILED, "failed"))]
    return [
        [graph("Messages waiting", per_queue(
            lambda q: q.queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=MINUTE))),
         graph("Messages in flight", per_queue(
             lambda q: q.queue.metric_approximate_number_of_messages_not_visible(
                 statistic="Maximum", period=MINUTE))),
         graph("Age of oldest message (s)", per_queue(
             lambda q: q.queue.metric_approximate_age_of_oldest_message(
                 statistic="Maximum", period=MINUTE)))],
        [graph("Dead letters waiting", [
            q.dead_letter_queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=MINUTE).with_(label=q.queue_name)
            for q in queues if q.dead_letter_queue is not None]),
         graph("Tasks succeeded / failed", tasks),
         graph("Task runtime p95, slowest worker (ms)", per_queue(
             lambda q: worker_metric(q.queue_name, metrics.RUNTIME_P95, "Maximum", MINUTE)))],
        [graph("Receive errors", per_queue(
            lambda q: worker_metric(q.queue_name, metrics.RECEIVE_ERRORS, "Sum", MINUTE)))],
    ]
