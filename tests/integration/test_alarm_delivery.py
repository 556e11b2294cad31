"""An alarm's notification reaches the alarm topic's subscribers, under the topic policy
the stack synthesizes.

moto 5.2 runs no alarm actions (``SetAlarmState`` only records the state: measured
below), so :mod:`local_aws.alarm_actions` plays CloudWatch: it publishes only where the
topic's policy lets ``cloudwatch.amazonaws.com`` publish for that alarm. The topic,
its policy (from the synthesized template, intrinsics resolved to what moto made) and
the alarm are real moto resources; the delivery to the subscribed SQS queue is moto's.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk.assertions import Template

from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from local_aws.alarm_actions import CLOUDWATCH, PUBLISH, allows, run_alarm_actions
from local_aws.moto_server import ACCOUNT_ID, REGION
from tests.unit.cdk_context import no_fleet_context

pytestmark = pytest.mark.integration


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """CloudFormation's intrinsics in a policy, with ``refs`` for Ref and GetAtt Arn."""
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return refs[value["Ref"]]
    if "Fn::GetAtt" in value:
        return refs[value["Fn::GetAtt"][0]]
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(resolve(p, refs) for p in parts)
    return {k: resolve(v, refs) for k, v in value.items()}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(no_fleet_context()))
    return Template.from_stack(stack).to_json()["Resources"]


def wait_for_message(sqs, url: str, deadline: float = 30) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
        if messages:
            return messages[0]
    raise AssertionError(f"no notification on {url} within {deadline} s")


def test_an_alarm_in_alarm_state_notifies_the_topics_subscribers(moto, template):
    session = boto3.Session(region_name=REGION, aws_access_key_id="test",
                            aws_secret_access_key="test")
    sns, sqs, cloudwatch = (session.client(s, endpoint_url=moto.endpoint_url)
                            for s in ("sns", "sqs", "cloudwatch"))
    (topic_id,) = [i for i, r in template.items() if r["Type"] == "AWS::SNS::Topic"]
    (policy,) = [r for r in template.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    alarm_ids = [i for i, r in template.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    topic = sns.create_topic(Name="kit-alarms")["TopicArn"]
    refs = {topic_id: topic, "AWS::AccountId": ACCOUNT_ID, "AWS::Region": REGION,
            "AWS::Partition": "aws",
            **{i: f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{i}" for i in alarm_ids}}
    document = resolve(policy["Properties"]["PolicyDocument"], refs)
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy",
                             AttributeValue=json.dumps(document))
    inbox = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)

    dead_letters = next(i for i in alarm_ids if i.startswith("AlarmsDeadLetterscelery"))
    for name in (dead_letters, "NotOneOfTheStacks"):
        cloudwatch.put_metric_alarm(
            AlarmName=name, Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=[{"Name": "QueueName", "Value": "celery-dlq"}], Statistic="Maximum",
            Period=300, EvaluationPeriods=1, Threshold=0,
            ComparisonOperator="GreaterThanThreshold", AlarmActions=[topic], OKActions=[topic])
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM",
                                   StateReason="one dead letter")
    # What moto itself does: the state changes, no notification is published.
    assert cloudwatch.describe_alarms(AlarmNames=[dead_letters])["MetricAlarms"][0][
        "StateValue"] == "ALARM"
    assert sqs.receive_message(QueueUrl=inbox, WaitTimeSeconds=1).get("Messages", []) == []

    assert run_alarm_actions(session, moto.endpoint_url, dead_letters).published == [topic]
    envelope = json.loads(wait_for_message(sqs, inbox)["Body"])
    notification = json.loads(envelope["Message"])
    assert envelope["TopicArn"] == topic
    assert (notification["AlarmName"], notification["NewStateValue"]) == (dead_letters, "ALARM")
    assert notification["AlarmArn"] == refs[dead_letters]

    # An alarm the policy does not name (another stack's, or a forged source) is refused.
    assert run_alarm_actions(session, moto.endpoint_url, "NotOneOfTheStacks").refused == [topic]
    # And no request without TLS, whoever makes it.
    assert not allows(document, service=CLOUDWATCH, action=PUBLISH, resource=topic, context={
        "aws:SourceArn": refs[dead_letters], "aws:SourceAccount": ACCOUNT_ID,
        "aws:SecureTransport": "false"})
