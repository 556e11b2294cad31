"""Alarms and dashboard from the spec: the encrypted TLS-only topic, four alarms per
queue with thresholds derived from (or overriding) each queue's settings, the
outputs, and the alarms block's validation."""

from __future__ import annotations

import copy
import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from infra import rules
from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from runtime.errors import SpecError
from tests.unit.cdk_context import default_context, no_fleet_context


def synth(context: dict) -> tuple[CeleryKitStack, Template]:
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(context))
    return stack, Template.from_stack(stack)


@pytest.fixture(scope="module")
def kit() -> tuple[CeleryKitStack, Template]:
    return synth(no_fleet_context())


def alarm(stack: CeleryKitStack, queue: str, kind: str) -> dict:
    logical_id = stack.resolve(stack.alarms.alarms[queue][kind].alarm_arn)["Fn::GetAtt"][0]
    return Template.from_stack(stack).to_json()["Resources"][logical_id]["Properties"]


def test_age_threshold_is_countdown_backoff_one_redelivery_and_the_run():
    assert rules.message_age_threshold(visibility_timeout=60, task_time_limit=1500,
                                       max_countdown=0, backoff_policy={1: 10, 2: 20, 3: 40}) \
        == 1630
    spec = load_spec(default_context())
    assert {q.name: q.max_message_age for q in spec.queues} == \
        {"celery": 1630, "reports": 3060, "orders.fifo": 660}
    stock = load_spec({**default_context(), "transport": "stock"})
    # stock kombu's longer visibility timeout delays the redelivery after a lost worker
    assert stock.queue("celery").max_message_age == 70 + (1500 + 60) + 1500


def test_each_queue_alarms_on_age_above_its_own_threshold(kit):
    stack, template = kit
    for queue, threshold in (("celery", 1630), ("reports", 3060), ("orders.fifo", 660)):
        props = alarm(stack, queue, "oldest_message")
        assert props["Threshold"] == threshold
        assert props["MetricName"] == "ApproximateAgeOfOldestMessage"
        assert props["Statistic"] == "Maximum" and props["Period"] == 60
        assert props["ComparisonOperator"] == "GreaterThanThreshold"


def test_a_queues_max_message_age_overrides_the_derivation():
    context = no_fleet_context()
    context["queues"][0]["max_message_age"] = 600
    stack, _ = synth(context)
    assert alarm(stack, "celery", "oldest_message")["Threshold"] == 600


def test_dead_letter_alarm_fires_on_one_visible_message_and_keeps_state_without_data(kit):
    stack, _ = kit
    props = alarm(stack, "celery", "dead_letters")
    assert (props["Threshold"], props["ComparisonOperator"], props["EvaluationPeriods"]) == \
        (0, "GreaterThanThreshold", 1)
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": stack.resolve(
        stack.queues["celery"].dead_letter_queue.queue_name)}]
    assert props["TreatMissingData"] == "missing"


def test_receive_errors_alarm_reads_the_workers_emf_metric(kit):
    stack, _ = kit
    props = alarm(stack, "reports", "receive_errors")
    assert props["Namespace"] == "CelerySqsKit" and props["MetricName"] == "ReceiveErrors"
    assert props["Dimensions"] == [{"Name": "Queue", "Value": "reports"}]
    assert (props["Statistic"], props["Period"], props["Threshold"]) == ("Sum", 300, 5)


def test_no_consumer_is_waiting_messages_and_no_receives_for_n_minutes(kit):
    stack, _ = kit
    props = alarm(stack, "orders.fifo", "no_consumer")
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (15, 15)
    (expression,) = [m for m in props["Metrics"] if m.get("ReturnData", True)]
    assert expression["Expression"] == "IF(visible > 0 AND FILL(received, 0) == 0, 1, 0)"
    used = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
    assert used["visible"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert used["visible"]["Stat"] == "Minimum"
    assert used["received"]["Metric"]["MetricName"] == "NumberOfMessagesReceived"
    assert used["received"]["Stat"] == "Sum"


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(kit):
    stack, template = kit
    topic = stack.resolve(stack.alarms.topic.topic_arn)
    queue_alarms = [a for made in stack.alarms.alarms.values() for a in made.values()]
    assert len(queue_alarms) == 4 * 3
    for made in stack.alarms.alarms.values():
        for a in made.values():
            props = alarm(stack, *next((q, k) for q, m in stack.alarms.alarms.items()
                                       for k, v in m.items() if v is a))
            assert props["AlarmActions"] == [topic] and props["OKActions"] == [topic]


def test_topic_is_encrypted_with_the_kit_key_tls_only_and_cloudwatch_may_use_the_key(kit):
    stack, template = kit
    template.has_resource_properties("AWS::SNS::Topic", Match.object_like({
        "KmsMasterKeyId": stack.resolve(stack.key.key_arn)}))
    template.has_resource_properties("AWS::SNS::TopicPolicy", Match.object_like({
        "PolicyDocument": Match.object_like({"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])})}))
    template.has_resource_properties("AWS::KMS::Key", Match.object_like({
        "KeyPolicy": Match.object_like({"Statement": Match.array_with([Match.object_like({
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"]})])})}))


def test_cloudwatch_may_publish_to_the_topic_for_these_alarms_of_this_account_only(kit):
    """The topic policy replaces SNS's default allow: without an explicit Allow for
    cloudwatch.amazonaws.com, alarms would notify no one."""
    stack, template = kit
    (policy,) = template.find_resources("AWS::SNS::TopicPolicy").values()
    (allow,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                if s["Effect"] == "Allow"]
    arns = [stack.resolve(a.alarm_arn) for made in stack.alarms.alarms.values()
            for a in made.values()]
    assert allow == {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
                     "Principal": {"Service": "cloudwatch.amazonaws.com"},
                     "Action": "sns:Publish",
                     "Resource": stack.resolve(stack.alarms.topic.topic_arn),
                     "Condition": {"ArnEquals": {"aws:SourceArn": arns},
                                   "StringEquals": {"aws:SourceAccount": {
                                       "Ref": "AWS::AccountId"}}}}
    assert len(arns) == 12


def test_dashboard_shows_queues_dlqs_tasks_runtime_and_errors(kit):
    stack, template = kit
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in ("Messages waiting", "Messages in flight", "Age of oldest message",
                  "Dead letters waiting", "Tasks succeeded / failed", "runtime p95",
                  "Receive errors"):
        assert title in body, title
    for metric in ("TasksSucceeded", "TasksFailed", "RuntimeP95", "ReceiveErrors"):
        assert f'\\"CelerySqsKit\\",\\"{metric}\\"' in body, metric


def test_outputs_name_the_topic_and_the_dashboard(kit):
    stack, template = kit
    outputs = template.to_json()["Outputs"]
    assert outputs["AlarmTopicArn"]["Value"] == stack.resolve(stack.alarms.topic.topic_arn)
    assert outputs["DashboardName"]["Value"] == {"Ref": stack.resolve(
        stack.alarms.dashboard.dashboard_name)["Ref"]}


def test_email_subscribes_and_disabled_alarms_make_nothing():
    context = no_fleet_context()
    context["alarms"] = {"email": "ops@example.com"}
    _, template = synth(context)
    template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": Match.any_value()})
    context["alarms"] = {"enabled": False}
    stack, template = synth(context)
    assert stack.alarms is None
    template.resource_count_is("AWS::SNS::Topic", 0)
    template.resource_count_is("AWS::CloudWatch::Dashboard", 0)
    assert "AlarmTopicArn" not in template.to_json().get("Outputs", {})


def test_an_age_threshold_the_retention_would_outlive_is_refused():
    context = copy.deepcopy(no_fleet_context())
    context["queues"][0]["max_message_age"] = 345_600
    with pytest.raises(SpecError, match="retention_period") as raised:
        load_spec(context)
    assert raised.value.field == "queues[celery].max_message_age"
