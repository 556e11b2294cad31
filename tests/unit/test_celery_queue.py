"""CeleryQueue: the queue and its DLQ as Celery needs them (encrypted, TLS-only,
redrive both ways), validated before any resource exists, and token-aware."""

from __future__ import annotations

import json

import aws_cdk as cdk
import jsii
import pytest
from aws_cdk import CfnParameter, Duration, IStableNumberProducer, Lazy, Token
from aws_cdk.assertions import Capture, Match, Template

from infra.constructs import CeleryQueue
from runtime.errors import SpecError
from tests.unit.cdk_context import ROOT

ACCOUNT, REGION = "123456789012", "eu-west-1"
CDK_FLAGS = {k: v for k, v in json.loads((ROOT / "cdk.json").read_text())["context"].items()
             if k != "celery_sqs_kit"}


def new_stack(name: str) -> cdk.Stack:
    return cdk.Stack(cdk.App(context=CDK_FLAGS), name,
                     env=cdk.Environment(account=ACCOUNT, region=REGION))


def queue_arn_literal(name: str) -> dict:
    """How the stack spells the ARN of the queue called ``name`` (partition stays a Ref)."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":sqs:{REGION}:{ACCOUNT}:{name}"]]}


@pytest.fixture(scope="module")
def built():
    stack = new_stack("Queues")
    queues = {
        "reports": CeleryQueue(
            stack, "Reports", queue_name="reports",
            visibility_timeout=Duration.hours(1), receive_wait_time=Duration.seconds(10),
            retention_period=Duration.days(2), max_message_size_bytes=131_072,
            max_receive_count=7, dead_letter_retention_period=Duration.days(10),
            backoff_policy={1: 30, 2: 60}, task_time_limit=Duration.minutes(50)),
        "orders": CeleryQueue(
            stack, "Orders", queue_name="orders.fifo", fifo=True,
            content_based_deduplication=True, visibility_timeout=Duration.minutes(15),
            task_time_limit=Duration.minutes(10)),
        "scratch": CeleryQueue(stack, "Scratch", queue_name="scratch", dead_letter_queue=False),
    }
    return stack, queues, Template.from_stack(stack)


def ref(stack: cdk.Stack, value: str):
    return stack.resolve(value)


def test_queue_takes_its_props(built):
    stack, queues, template = built
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "reports",
        "VisibilityTimeout": 3600,
        "ReceiveMessageWaitTimeSeconds": 10,
        "MessageRetentionPeriod": 172_800,
        "MaximumMessageSize": 131_072,
        "FifoQueue": Match.absent(),
    })


def test_queue_redrives_to_its_dlq_after_max_receive_count(built):
    stack, queues, template = built
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "reports",
        "RedrivePolicy": {
            "deadLetterTargetArn": ref(stack, queues["reports"].dead_letter_queue.queue_arn),
            "maxReceiveCount": 7,
        },
    })
    assert queues["reports"].max_receive_count == 7


def test_dlq_keeps_its_own_retention_and_admits_only_its_source_queue(built):
    stack, queues, template = built
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "reports-dlq",
        "MessageRetentionPeriod": 864_000,
        "RedriveAllowPolicy": {"redrivePermission": "byQueue",
                               "sourceQueueArns": [queue_arn_literal("reports")]},
        "RedrivePolicy": Match.absent(),
    })


@pytest.mark.parametrize("name", ["reports", "reports-dlq", "orders.fifo", "orders-dlq.fifo",
                                  "scratch"])
def test_every_queue_is_encrypted_with_a_rotating_customer_key(built, name):
    stack, queues, template = built
    key = Capture()
    template.has_resource_properties("AWS::SQS::Queue", {"QueueName": name, "KmsMasterKeyId": key})
    (logical_id, attribute) = key.as_object()["Fn::GetAtt"]
    assert attribute == "Arn"
    resource = template.to_json()["Resources"][logical_id]
    assert resource["Type"] == "AWS::KMS::Key"
    assert resource["Properties"]["EnableKeyRotation"] is True


def test_queue_and_its_dlq_share_the_queue_key(built):
    stack, queues, template = built
    reports = queues["reports"]
    key_arn = ref(stack, reports.encryption_key.key_arn)
    for name in ("reports", "reports-dlq"):
        template.has_resource_properties("AWS::SQS::Queue",
                                         {"QueueName": name, "KmsMasterKeyId": key_arn})


def test_given_key_is_used_instead_of_a_new_one():
    stack = new_stack("SharedKey")
    key = cdk.aws_kms.Key(stack, "Shared", enable_key_rotation=True)
    CeleryQueue(stack, "A", queue_name="a", encryption_key=key)
    CeleryQueue(stack, "B", queue_name="b", encryption_key=key)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::KMS::Key", 1)
    template.resource_properties_count_is(
        "AWS::SQS::Queue", {"KmsMasterKeyId": stack.resolve(key.key_arn)}, 4)


@pytest.mark.parametrize("name", ["reports", "reports-dlq", "orders.fifo", "orders-dlq.fifo",
                                  "scratch"])
def test_every_queue_denies_requests_without_tls(built, name):
    stack, queues, template = built
    resources = template.to_json()["Resources"]
    (queue_id,) = [i for i, r in resources.items()
                   if r["Type"] == "AWS::SQS::Queue" and r["Properties"]["QueueName"] == name]
    template.has_resource_properties("AWS::SQS::QueuePolicy", {
        "Queues": [{"Ref": queue_id}],
        "PolicyDocument": {"Statement": Match.array_with([{
            "Effect": "Deny",
            "Action": "sqs:*",
            "Principal": {"AWS": "*"},
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
        }])},
    })


def test_queue_policies_allow_nothing(built):
    stack, queues, template = built
    for policy in template.find_resources("AWS::SQS::QueuePolicy").values():
        effects = {s["Effect"] for s in policy["Properties"]["PolicyDocument"]["Statement"]}
        assert effects == {"Deny"}


def test_fifo_queue_and_its_dlq_are_both_fifo(built):
    stack, queues, template = built
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "orders.fifo", "FifoQueue": True, "ContentBasedDeduplication": True,
        "VisibilityTimeout": 900,
        "RedrivePolicy": Match.object_like({"maxReceiveCount": 5}),
    })
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "orders-dlq.fifo", "FifoQueue": True,
        "RedriveAllowPolicy": {"redrivePermission": "byQueue",
                               "sourceQueueArns": [queue_arn_literal("orders.fifo")]},
    })
    assert queues["orders"].dead_letter_queue is not None


def test_without_dead_letter_queue_there_is_no_dlq_and_no_redrive(built):
    stack, queues, template = built
    assert queues["scratch"].dead_letter_queue is None
    template.has_resource_properties("AWS::SQS::Queue",
                                     {"QueueName": "scratch", "RedrivePolicy": Match.absent()})
    names = {r["Properties"]["QueueName"] for r in template.find_resources("AWS::SQS::Queue").values()}
    assert names == {"reports", "reports-dlq", "orders.fifo", "orders-dlq.fifo", "scratch"}


def test_default_props_suit_the_bundled_transport():
    stack = new_stack("Defaults")
    CeleryQueue(stack, "Celery", queue_name="celery")
    template = Template.from_stack(stack)
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "celery", "VisibilityTimeout": 60, "ReceiveMessageWaitTimeSeconds": 20,
        "MessageRetentionPeriod": 345_600, "MaximumMessageSize": 262_144,
        "RedrivePolicy": Match.object_like({"maxReceiveCount": 5}),
    })
    template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "celery-dlq", "MessageRetentionPeriod": 1_209_600})


def test_stock_transport_defaults_to_a_visibility_timeout_that_outlasts_the_task():
    stack = new_stack("Stock")
    CeleryQueue(stack, "Q", queue_name="stock", transport="stock",
                task_time_limit=Duration.minutes(10), max_countdown=Duration.seconds(120))
    Template.from_stack(stack).has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "stock", "VisibilityTimeout": 600 + 120 + 60})


# --- validation at construction, token-aware ---------------------------------


@jsii.implements(IStableNumberProducer)
class _Seconds:
    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def produce(self) -> int:
        return self.seconds


def test_visibility_from_a_deploy_parameter_is_not_judged_at_construction():
    stack = new_stack("Parameter")
    seconds = CfnParameter(stack, "VisibilitySeconds", type="Number", default=1800)
    CeleryQueue(stack, "Q", queue_name="param",
                visibility_timeout=Duration.seconds(Token.as_number(seconds.value_as_number)))
    Template.from_stack(stack).has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "param", "VisibilityTimeout": {"Ref": "VisibilitySeconds"}})


def test_visibility_from_a_lazy_value_is_not_judged_at_construction():
    stack = new_stack("LazyValue")
    CeleryQueue(stack, "Q", queue_name="lazy",
                visibility_timeout=Duration.seconds(Lazy.number(_Seconds(3600))))
    Template.from_stack(stack).has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "lazy", "VisibilityTimeout": 3600})


def test_token_visibility_does_not_hide_a_concrete_bad_prop():
    stack = new_stack("TokenAndBad")
    with pytest.raises(SpecError) as raised:
        CeleryQueue(stack, "Q", queue_name="mixed",
                    visibility_timeout=Duration.seconds(Lazy.number(_Seconds(3600))),
                    receive_wait_time=Duration.seconds(25))
    assert raised.value.field == "receive_wait_time"


def test_stock_default_needs_concrete_task_limits():
    stack = new_stack("StockToken")
    limit = CfnParameter(stack, "Limit", type="Number", default=600)
    with pytest.raises(SpecError) as raised:
        CeleryQueue(stack, "Q", queue_name="stock", transport="stock",
                    task_time_limit=Duration.seconds(Token.as_number(limit.value_as_number)))
    assert raised.value.field == "visibility_timeout"
    assert "must be given with the stock transport" in str(raised.value)


BAD_PROPS = [
    ("stock-visibility-below-task-limit",
     dict(transport="stock", visibility_timeout=Duration.seconds(100)),
     "visibility_timeout", "task_time_limit (1500) + max_countdown (0) + 60 s margin = 1560", 100),
    ("bundled-visibility-below-heartbeat-minimum", dict(visibility_timeout=Duration.seconds(20)),
     "visibility_timeout", "must be >= 30 seconds with the bundled transport", 20),
    ("bundled-task-limit-beyond-12h-cap", dict(task_time_limit=Duration.hours(12)),
     "task_time_limit", "must be <= 43140 seconds with the bundled transport", 43_200),
    ("transport-unknown", dict(transport="sqs"), "transport", "must be 'bundled' or 'stock'",
     "sqs"),
    ("visibility-above-12h", dict(visibility_timeout=Duration.hours(13)),
     "visibility_timeout", "must be 0..43200 seconds", 46_800),
    ("wait-above-20", dict(receive_wait_time=Duration.seconds(30)),
     "receive_wait_time", "must be 0..20 seconds", 30),
    ("dlq-retention-shorter", dict(dead_letter_retention_period=Duration.days(1)),
     "dead_letter_retention_period", "must be >= retention_period (345600)", 86_400),
    ("backoff-too-long", dict(max_receive_count=2, backoff_policy={1: 5, 2: 10}),
     "backoff_policy", "fewer steps than max_receive_count (2)", 2),
    ("fifo-name", dict(queue_name="orders", fifo=True),
     "queue_name", "must end in '.fifo'", "orders"),
    ("name-with-dot", dict(queue_name="reports.v2"), "queue_name", "kombu rewrites", "reports.v2"),
    ("dedup-on-standard", dict(content_based_deduplication=True),
     "content_based_deduplication", "applies to FIFO queues only", True),
]


@pytest.mark.parametrize("props, field, rule, value", [c[1:] for c in BAD_PROPS],
                         ids=[c[0] for c in BAD_PROPS])
def test_bad_prop_raises_naming_the_prop_before_any_resource_exists(props, field, rule, value):
    stack = new_stack("Bad")
    before = [c.node.path for c in stack.node.children]
    props = {"queue_name": "bad", **props}
    with pytest.raises(SpecError) as raised:
        CeleryQueue(stack, "Q", **props)
    error = raised.value
    assert error.field == field
    assert rule in str(error) and error.value == value
    assert [c.node.path for c in stack.node.children] == before
    assert stack.node.try_find_child("Q") is None
    assert Template.from_stack(stack).to_json().get("Resources", {}) == {}

