"""CloudWatch's alarm actions, which moto does not run: publish an alarm's state change
to its SNS topics only where each topic's policy lets CloudWatch publish.

Measured on moto 5.2: ``SetAlarmState`` records the new state and its history and
calls nothing else (``moto/cloudwatch/models.py``, ``update_state``), so no alarm
notification ever reaches a topic there. :func:`run_alarm_actions` does CloudWatch's
part: for the alarm's current state it takes that state's actions (``AlarmActions``,
``OKActions``, ``InsufficientDataActions``), and for each SNS topic among them asks
the topic's policy, as AWS evaluates a resource policy for a service principal, whether
``cloudwatch.amazonaws.com`` may ``sns:Publish`` with ``aws:SourceArn`` = the alarm's
ARN, ``aws:SourceAccount`` = its account and TLS on. An explicit Deny wins; otherwise
an Allow must match principal, action, resource and every condition (a policy with
no Allow for CloudWatch refuses it: a topic policy replaces SNS's default one). Only
then does it publish the CloudWatch-shaped message, which moto delivers to the
topic's subscribers.

The evaluation covers what topic policies of this kit hold: ``Principal`` ``*``,
``{"AWS": "*"}`` or ``{"Service": ...}``; ``Action``/``Resource`` with ``*`` and ``?``
wildcards; the condition operators ``StringEquals``, ``StringLike``, ``ArnEquals``,
``ArnLike`` and ``Bool``. Any other operator raises, so a policy it cannot judge is
never taken as allowing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

import boto3

CLOUDWATCH = "cloudwatch.amazonaws.com"
PUBLISH = "sns:Publish"
_STATE_ACTIONS = {"ALARM": "AlarmActions", "OK": "OKActions",
                  "INSUFFICIENT_DATA": "InsufficientDataActions"}


@dataclass
class Delivery:
    """What :func:`run_alarm_actions` did with each SNS action of the alarm's state."""

    published: list[str] = field(default_factory=list)
    """Topic ARNs published to."""
    refused: list[str] = field(default_factory=list)
    """Topic ARNs whose policy does not let CloudWatch publish for this alarm."""


def run_alarm_actions(session: boto3.Session, endpoint_url: str, alarm_name: str) -> Delivery:
    """Run the SNS actions of ``alarm_name``'s current state as CloudWatch would (the
    calls are ``session``'s: CloudWatch's own identity is what the policy is asked about)."""
    region = session.region_name
    cloudwatch = session.client("cloudwatch", endpoint_url=endpoint_url)
    sns = session.client("sns", endpoint_url=endpoint_url)
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
    account = alarm["AlarmArn"].split(":")[4]
    context = {"aws:SourceArn": alarm["AlarmArn"], "aws:SourceAccount": account,
               "aws:SecureTransport": "true"}
    delivery = Delivery()
    for topic in alarm.get(_STATE_ACTIONS[alarm["StateValue"]], []):
        if not topic.startswith("arn:aws:sns:"):
            continue
        policy = json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
        if not allows(policy, service=CLOUDWATCH, action=PUBLISH, resource=topic,
                      context=context):
            delivery.refused.append(topic)
            continue
        sns.publish(TopicArn=topic, Subject=f'{alarm["StateValue"]}: "{alarm_name}" in {region}',
                    Message=json.dumps(notification(alarm, account, region)))
        delivery.published.append(topic)
    return delivery


def notification(alarm: Mapping[str, Any], account: str, region: str) -> dict[str, Any]:
    """The JSON CloudWatch publishes for a state change (the fields a reader keys on)."""
    return {"AlarmName": alarm["AlarmName"], "AlarmDescription": alarm.get("AlarmDescription"),
            "AWSAccountId": account, "AlarmArn": alarm["AlarmArn"], "Region": region,
            "NewStateValue": alarm["StateValue"], "NewStateReason": alarm.get("StateReason"),
            "StateChangeTime": datetime.now(timezone.utc).isoformat()}


def allows(policy: Mapping[str, Any], *, service: str, action: str, resource: str,
           context: Mapping[str, str]) -> bool:
    """Whether a resource policy lets the AWS service principal ``service`` take ``action``
    on ``resource`` with the request's condition ``context`` (explicit Deny wins)."""
    matching = [s for s in _statements(policy)
                if _principal_matches(s.get("Principal"), service)
                and _any_matches(s.get("Action"), action, case=False)
                and _any_matches(s.get("Resource"), resource, case=True)
                and _conditions_hold(s.get("Condition", {}), context)]
    if any(s["Effect"] == "Deny" for s in matching):
        return False
    return any(s["Effect"] == "Allow" for s in matching)


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, Mapping) else list(statements)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, service: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return "*" in _listed(principal.get("AWS", [])) or \
        service in _listed(principal.get("Service", []))


def _any_matches(patterns: Any, value: str, *, case: bool) -> bool:
    if case:
        return any(fnmatchcase(value, p) for p in _listed(patterns or []))
    return any(fnmatchcase(value.lower(), p.lower()) for p in _listed(patterns or []))


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]],
                     context: Mapping[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            wanted = [str(e) for e in _listed(expected)]
            if operator in ("StringEquals", "ArnEquals"):
                held = actual in wanted
            elif operator in ("StringLike", "ArnLike"):
                held = any(fnmatchcase(actual, w) for w in wanted)
            elif operator == "Bool":
                held = actual.lower() in (w.lower() for w in wanted)
            else:
                raise ValueError(f"condition operator {operator} is not evaluated here")
            if not held:
                return False
    return True
