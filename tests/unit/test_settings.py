"""infra.settings.load_spec: defaults, the shipped cdk.json block, the -c override,
and every spec rule reported as one SpecError naming the spec path, the rule and
the value given."""

from __future__ import annotations

import copy
import re
from dataclasses import fields, is_dataclass

import pytest

from infra import settings as spec_module
from infra.settings import (CONTEXT_KEY, AlarmsSpec, Ec2FleetSpec, EcsFleetSpec, FleetSpec, KitSpec,
                            QueueSpec, ResultSpec, StsSpec, WorkersSpec, load_spec)
from runtime.errors import SpecError
from tests.unit.cdk_context import default_context

OPS = "arn:aws:iam::123456789012:user/ops"
ADMIN = "arn:aws:iam::123456789012:role/Admin"


def one_queue(**fields) -> dict:
    return {"queues": [{"name": "reports", **fields}]}


def stock_queue(**fields) -> dict:
    return {"transport": "stock", **one_queue(**fields)}


def with_fleet(**fields) -> dict:
    return {"queues": [{"name": "celery"}], **fields}


def with_ecs(**fields) -> dict:
    return {"queues": [{"name": "celery"}, {"name": "reports", "visibility_timeout": 3660,
                                            "task_time_limit": 3600}],
            "workers": {"ecs": fields}}


def with_ec2(**fields) -> dict:
    return {**with_ecs(), "workers": {"ec2": fields}}



# (id, context, spec path, rule text, value reported)
SPEC_RULES = [
    ("stock-visibility-below-task-limit-plus-margin", stock_queue(visibility_timeout=1500),
     "queues[reports].visibility_timeout",
     "must be >= task_time_limit (1500) + max_countdown (0) + 60 s margin = 1560 seconds "
     "with the stock transport", 1500),
    ("stock-visibility-does-not-cover-countdown",
     stock_queue(visibility_timeout=1800, max_countdown=300),
     "queues[reports].visibility_timeout", "+ max_countdown (300) + 60 s margin = 1860", 1800),
    ("stock-short-visibility", stock_queue(visibility_timeout=60),
     "queues[reports].visibility_timeout", "or SQS redelivers running tasks to a second worker",
     60),
    ("bundled-visibility-below-heartbeat-minimum", one_queue(visibility_timeout=29),
     "queues[reports].visibility_timeout", "must be >= 30 seconds with the bundled transport", 29),
    ("bundled-task-limit-beyond-12h-cap", one_queue(task_time_limit=43_141),
     "queues[reports].task_time_limit", "must be <= 43140 seconds with the bundled transport: "
     "SQS keeps a message invisible at most 43200 s from its receipt", 43_141),
    ("bundled-long-task-after-a-far-countdown",
     one_queue(task_time_limit=7200, max_countdown=39_600),
     "queues[reports].task_time_limit", "must be <= 3540 seconds with the bundled transport", 7200),
    ("bundled-fifo-countdown-beyond-what-a-worker-holds",
     {"queues": [{"name": "orders.fifo", "fifo": True, "max_countdown": 40_000}]},
     "queues[orders.fifo].max_countdown", "must be <= 39600 seconds on a FIFO queue", 40_000),
    ("far-countdown-on-a-consume-only-queue", one_queue(workers_send=False, max_countdown=39_601),
     "queues[reports].max_countdown", "must be <= 39600 seconds when workers_send is false: a "
     "task due later is parked (sent to its own queue again with a delay), which needs the "
     "workers' sqs:SendMessage", 39_601),
    ("transport-unknown", with_fleet(transport="kombu"), "celery_sqs_kit.transport",
     "must be 'bundled' or 'stock'", "kombu"),
    ("visibility-above-12h", one_queue(visibility_timeout=43_201),
     "queues[reports].visibility_timeout", "must be 0..43200 seconds", 43_201),
    ("visibility-negative", one_queue(visibility_timeout=-5),
     "queues[reports].visibility_timeout", "must be 0..43200 seconds", -5),
    ("wait-above-20", one_queue(receive_wait_time=21),
     "queues[reports].receive_wait_time", "must be 0..20 seconds", 21),
    ("wait-negative", one_queue(receive_wait_time=-1),
     "queues[reports].receive_wait_time", "must be 0..20 seconds", -1),
    ("wait-differs-between-queues",
     {"queues": [{"name": "celery"}, {"name": "reports", "receive_wait_time": 10}]},
     "queues[reports].receive_wait_time", "must equal queues[celery].receive_wait_time (20)", 10),
    ("retention-not-above-visibility", one_queue(retention_period=60),
     "queues[reports].retention_period", "must be > visibility_timeout (60)", 60),
    ("retention-below-minimum", one_queue(retention_period=59),
     "queues[reports].retention_period", "must be 60..1209600 seconds", 59),
    ("retention-above-14-days", one_queue(retention_period=1_209_601),
     "queues[reports].retention_period", "must be 60..1209600 seconds", 1_209_601),
    ("dlq-retention-shorter-than-source",
     one_queue(retention_period=604_800, dead_letter_retention_period=345_600),
     "queues[reports].dead_letter_retention_period", "must be >= retention_period (604800)",
     345_600),
    ("dlq-retention-above-14-days", one_queue(dead_letter_retention_period=1_209_601),
     "queues[reports].dead_letter_retention_period", "must be 60..1209600 seconds", 1_209_601),
    ("message-size-below-1k", one_queue(max_message_size_bytes=1023),
     "queues[reports].max_message_size_bytes", "must be 1024..1048576 bytes", 1023),
    ("message-size-above-1m", one_queue(max_message_size_bytes=1_048_577),
     "queues[reports].max_message_size_bytes", "must be 1024..1048576 bytes", 1_048_577),
    ("receive-count-zero", one_queue(max_receive_count=0),
     "queues[reports].max_receive_count", "must be 1..1000", 0),
    ("receive-count-above-1000", one_queue(max_receive_count=1001),
     "queues[reports].max_receive_count", "must be 1..1000", 1001),
    ("backoff-as-many-steps-as-receives",
     one_queue(max_receive_count=3, backoff_policy={"1": 10, "2": 20, "3": 40}),
     "queues[reports].backoff_policy", "must have fewer steps than max_receive_count (3)", 3),
    ("backoff-attempt-gap", one_queue(backoff_policy={"1": 10, "3": 40}),
     "queues[reports].backoff_policy", "attempt numbers must be 1..n with no gap", [1, 3]),
    ("backoff-key-not-a-number", one_queue(backoff_policy={"first": 10}),
     "queues[reports].backoff_policy", "keys must be attempt numbers", "first"),
    ("backoff-delay-negative", one_queue(backoff_policy={"1": -5}),
     "queues[reports].backoff_policy[1]", "must be 0..43200 seconds", -5),
    ("fifo-name-without-suffix", {"queues": [{"name": "orders", "fifo": True}]},
     "queues[orders].name", "of a FIFO queue must end in '.fifo'", "orders"),
    ("standard-name-with-fifo-suffix", {"queues": [{"name": "orders.fifo"}]},
     "queues[orders.fifo].name", "ends in '.fifo' but fifo is false", "orders.fifo"),
    ("name-with-dot", {"queues": [{"name": "reports.v2"}]},
     "queues[reports.v2].name", "kombu rewrites '.' to '-'", "reports.v2"),
    ("name-leaves-no-room-for-dlq", {"queues": [{"name": "r" * 77}]},
     f"queues[{'r' * 77}].name", "within 80 characters", "r" * 77),
    ("name-missing", {"queues": [{"visibility_timeout": 1800}]},
     "queues[0].name", "must be a non-empty string", None),
    ("duplicate-names", {"queues": [{"name": "celery"}, {"name": "reports"}, {"name": "celery"}]},
     "celery_sqs_kit.queues", "must have unique names", ["celery"]),
    ("queues-empty", {"queues": []}, "celery_sqs_kit.queues", "must be a non-empty list", []),
    ("queue-named-like-another-queues-dlq", {"queues": [{"name": "celery"}, {"name": "celery-dlq"}]},
     "celery_sqs_kit.queues", "must not name a queue like another queue's dead-letter queue",
     ["celery-dlq"]),
    ("fifo-queue-named-like-another-queues-dlq",
     {"queues": [{"name": "orders.fifo", "fifo": True}, {"name": "orders-dlq.fifo", "fifo": True}]},
     "celery_sqs_kit.queues", "must not name a queue like another queue's dead-letter queue",
     ["orders-dlq.fifo"]),
    ("spec-block-not-a-mapping", "celery", "celery_sqs_kit", "must be a mapping", "celery"),
    ("spec-block-a-list", [{"name": "celery"}], "celery_sqs_kit", "must be a mapping",
     [{"name": "celery"}]),
    ("stack-name-with-underscore", with_fleet(stack_name="celery_fleet"),
     "celery_sqs_kit.stack_name", "CloudFormation rule", "celery_fleet"),
    ("stack-name-starting-with-digit", with_fleet(stack_name="1fleet"),
     "celery_sqs_kit.stack_name", "must start with a letter", "1fleet"),
    ("parameter-name-with-space", with_fleet(config_parameter_name="/celery fleet/config"),
     "celery_sqs_kit.config_parameter_name", "SSM rule", "/celery fleet/config"),
    ("parameter-name-reserved-prefix", with_fleet(config_parameter_name="/aws/celery"),
     "celery_sqs_kit.config_parameter_name", "not starting with 'aws' or 'ssm'", "/aws/celery"),
    ("queue-not-a-mapping", {"queues": ["celery"]}, "queues[0]", "must be a mapping", "celery"),
    ("default-queue-not-a-queue", with_fleet(default_queue="reports"),
     "celery_sqs_kit.default_queue", "must name one of the queues ['celery']", "reports"),
    ("unknown-top-level-field", with_fleet(queue=[]),
     "celery_sqs_kit", "has unknown field(s)", ["queue"]),
    ("unknown-queue-field", one_queue(visiblity_timeout=1800),
     "queues[reports]", "has unknown field(s)", ["visiblity_timeout"]),
    ("unknown-sts-field", with_fleet(sts={"enable": True}),
     "celery_sqs_kit.sts", "has unknown field(s)", ["enable"]),
    ("visibility-as-string", one_queue(visibility_timeout="1800"),
     "queues[reports].visibility_timeout", "must be of type int", "1800"),
    ("visibility-as-bool", one_queue(visibility_timeout=True),
     "queues[reports].visibility_timeout", "must be of type int", True),
    ("visibility-as-float", one_queue(visibility_timeout=1800.0),
     "queues[reports].visibility_timeout", "must be of type int", 1800.0),
    ("fifo-as-string", {"queues": [{"name": "orders.fifo", "fifo": "true"}]},
     "queues[orders.fifo].fifo", "must be of type bool", "true"),
    ("routes-not-a-list", one_queue(routes="demo.tasks.*"),
     "queues[reports].routes", "must be a list of non-empty strings", "demo.tasks.*"),
    ("producer-role-as-string", with_fleet(producer_role="yes"),
     "celery_sqs_kit.producer_role", "must be of type bool", "yes"),
    ("sts-token-below-15-min", with_fleet(sts={"token_timeout": 899}),
     "celery_sqs_kit.sts.token_timeout", "must be 900..43200 seconds", 899),
    ("sts-token-above-12h", with_fleet(sts={"token_timeout": 43_201, "max_session_duration": 43_200}),
     "celery_sqs_kit.sts.token_timeout", "must be 900..43200 seconds", 43_201),
    ("sts-token-longer-than-session", with_fleet(sts={"token_timeout": 7200, "max_session_duration": 3600}),
     "celery_sqs_kit.sts.token_timeout", "must be <= max_session_duration (3600)", 7200),
    ("sts-session-below-1h", with_fleet(sts={"max_session_duration": 1800}),
     "celery_sqs_kit.sts.max_session_duration", "must be 3600..43200 seconds", 1800),
    ("sts-external-id-too-short", with_fleet(sts={"enabled": True, "external_id": "x"}),
     "celery_sqs_kit.sts.external_id", "must be 2..1224 characters", "x"),
    ("dedicated-role-without-sts", one_queue(dedicated_role=True),
     "queues[reports].dedicated_role", "needs sts.enabled", True),
    ("content-deduplication-on-standard-queue", one_queue(content_based_deduplication=True),
     "queues[reports].content_based_deduplication", "applies to FIFO queues only", True),
    ("result-ttl-below-minute", with_fleet(result_backend={"ttl_seconds": 59}),
     "celery_sqs_kit.result_backend.ttl_seconds", "must be 60..31536000 seconds", 59),
    ("principal-not-an-arn", with_fleet(extra_trusted_principals=["ops"]),
     "celery_sqs_kit.extra_trusted_principals[0]", "must be an IAM user or role ARN", "ops"),
    ("principal-not-iam", with_fleet(extra_trusted_principals=[OPS, "arn:aws:s3:::bucket"]),
     "celery_sqs_kit.extra_trusted_principals[1]", "must be an IAM user or role ARN",
     "arn:aws:s3:::bucket"),
    ("principal-not-a-string", with_fleet(extra_trusted_principals=[123456789012]),
     "celery_sqs_kit.extra_trusted_principals[0]", "must be an IAM user or role ARN", 123456789012),
    ("principals-not-a-list", with_fleet(extra_trusted_principals=OPS),
     "celery_sqs_kit.extra_trusted_principals", "must be of type list", OPS),
    ("workers-not-a-mapping", with_fleet(workers=["ecs"]), "celery_sqs_kit.workers",
     "must be a mapping with optional ecs and ec2 fleets", ["ecs"]),
    ("unknown-workers-field", with_fleet(workers={"fargate": {}}), "celery_sqs_kit.workers",
     "has unknown field(s)", ["fargate"]),
    ("fleet-not-a-mapping", with_fleet(workers={"ecs": True}), "celery_sqs_kit.workers.ecs",
     "must be a mapping of fleet fields", True),
    ("unknown-ecs-field", with_ecs(instance_type="t3.small"), "celery_sqs_kit.workers.ecs",
     "has unknown field(s)", ["instance_type"]),
    ("unknown-ec2-field", with_ec2(cpu=512), "celery_sqs_kit.workers.ec2",
     "has unknown field(s)", ["cpu"]),
    ("fleet-queue-not-in-spec", with_ecs(queues=["celery", "billing"]),
     "celery_sqs_kit.workers.ecs.queues", "must name one or more of the queues",
     ["celery", "billing"]),
    ("fleet-queues-empty", with_ecs(queues=[]), "celery_sqs_kit.workers.ecs.queues",
     "must name one or more of the queues", []),
    ("fleet-queue-twice", with_ec2(queues=["celery", "celery"]),
     "celery_sqs_kit.workers.ec2.queues", "each once", ["celery", "celery"]),
    ("min-capacity-negative", with_ecs(min_capacity=-1), "celery_sqs_kit.workers.ecs.min_capacity",
     "must be 0..1000 workers", -1),
    ("max-capacity-zero", with_ec2(max_capacity=0), "celery_sqs_kit.workers.ec2.max_capacity",
     "must be 1..1000 workers", 0),
    ("max-below-min", with_ecs(min_capacity=3, max_capacity=2),
     "celery_sqs_kit.workers.ecs.max_capacity", "must be >= min_capacity (3)", 2),
    ("max-capacity-as-string", with_ecs(max_capacity="4"),
     "celery_sqs_kit.workers.ecs.max_capacity", "must be of type int", "4"),
    ("concurrency-zero", with_ec2(concurrency=0), "celery_sqs_kit.workers.ec2.concurrency",
     "must be 1..256 processes", 0),
    ("target-backlog-zero", with_ecs(target_backlog_per_worker=0),
     "celery_sqs_kit.workers.ecs.target_backlog_per_worker", "must be 1..100000 messages", 0),
    ("target-backlog-as-float", with_ecs(target_backlog_per_worker=2.5),
     "celery_sqs_kit.workers.ecs.target_backlog_per_worker", "must be of type int or null", 2.5),
    ("fargate-cpu-unknown", with_ecs(cpu=300), "celery_sqs_kit.workers.ecs.cpu",
     "must be one of Fargate's CPU sizes [256, 512, 1024, 2048, 4096, 8192, 16384]", 300),
    ("fargate-memory-not-paired", with_ecs(cpu=256, memory=4096),
     "celery_sqs_kit.workers.ecs.memory", "must be one of [512, 1024, 2048] MiB with cpu 256",
     4096),
    ("fargate-memory-off-step", with_ecs(cpu=8192, memory=20000),
     "celery_sqs_kit.workers.ecs.memory", "must be 16384..61440 MiB in steps of 4096", 20000),
    ("ecs-stop-timeout-above-120", with_ecs(stop_timeout=121),
     "celery_sqs_kit.workers.ecs.stop_timeout", "must be 2..120 seconds (Fargate rule)", 121),
    ("ecs-stop-timeout-below-2", with_ecs(stop_timeout=1),
     "celery_sqs_kit.workers.ecs.stop_timeout", "must be 2..120 seconds (Fargate rule)", 1),
    ("ec2-stop-timeout-beyond-hook", with_ec2(stop_timeout=7141),
     "celery_sqs_kit.workers.ec2.stop_timeout", "(the termination hook waits stop_timeout + "
     "60 s, at most 7200 s)", 7141),
    ("ec2-derived-stop-timeout-beyond-hook",
     {"queues": [{"name": "etl", "visibility_timeout": 9000, "task_time_limit": 8000}],
      "workers": {"ec2": {}}},
     "celery_sqs_kit.workers.ec2.stop_timeout", "must be 1..7140 seconds", 8000),
    ("instance-type-malformed", with_ec2(instance_type="large"),
     "celery_sqs_kit.workers.ec2.instance_type", "must be an EC2 instance type", "large"),
    ("image-uri-with-space", with_ecs(image_uri="my image:1"),
     "celery_sqs_kit.workers.ecs.image_uri", "must be an image reference", "my image:1"),
    ("image-uri-and-directory", with_ec2(image_uri="worker:1", image_directory="."),
     "celery_sqs_kit.workers.ec2.image_directory", "must not be set with image_uri", "."),
    ("image-directory-without-dockerfile", with_ecs(image_directory="infra"),
     "celery_sqs_kit.workers.ecs.image_directory", "must be a directory holding a Dockerfile",
     "infra"),
    ("transport-not-a-string", with_fleet(transport=["bundled"]), "celery_sqs_kit.transport",
     "must be of type str", ["bundled"]),
    ("endpoint-url-without-scheme", with_fleet(endpoint_url="sqs.eu-west-1.amazonaws.com"),
     "celery_sqs_kit.endpoint_url", "must be an http:// or https:// URL",
     "sqs.eu-west-1.amazonaws.com"),
    ("result-backend-not-a-mapping", with_fleet(result_backend=True),
     "celery_sqs_kit.result_backend", "must be a mapping", True),
    ("result-backend-enabled-as-string", with_fleet(result_backend={"enabled": "no"}),
     "celery_sqs_kit.result_backend.enabled", "must be of type bool", "no"),
    ("sts-not-a-mapping", with_fleet(sts="arn:aws:iam::123456789012:role/broker"),
     "celery_sqs_kit.sts", "must be a mapping", "arn:aws:iam::123456789012:role/broker"),
    ("sts-enabled-as-number", with_fleet(sts={"enabled": 1}),
     "celery_sqs_kit.sts.enabled", "must be of type bool", 1),
    ("dead-letter-queue-as-string", one_queue(dead_letter_queue="yes"),
     "queues[reports].dead_letter_queue", "must be of type bool", "yes"),
    ("backoff-tasks-not-a-list", one_queue(backoff_tasks="demo.tasks.add"),
     "queues[reports].backoff_tasks", "must be a list of non-empty strings", "demo.tasks.add"),
    ("task-limit-zero", one_queue(task_time_limit=0),
     "queues[reports].task_time_limit", "must be 1..43200 seconds", 0),
    ("countdown-negative", one_queue(max_countdown=-1),
     "queues[reports].max_countdown", "must be 0..43200 seconds", -1),
    ("workers-send-as-number", one_queue(workers_send=0),
     "queues[reports].workers_send", "must be of type bool", 0),
    ("message-age-below-a-minute", one_queue(max_message_age=59),
     "queues[reports].max_message_age", "must be 60..345599 seconds", 59),
    ("message-age-as-string", one_queue(max_message_age="1h"),
     "queues[reports].max_message_age", "must be of type int or null", "1h"),
    ("scaling-as-string", with_fleet(workers={"scaling": "no"}),
     "celery_sqs_kit.workers.scaling", "must be of type bool", "no"),
    ("deployed-as-string", with_fleet(workers={"deployed": "no"}),
     "celery_sqs_kit.workers.deployed", "must be of type bool", "no"),
    ("alarms-not-a-mapping", with_fleet(alarms=["email"]), "celery_sqs_kit.alarms",
     "must be a mapping", ["email"]),
    ("unknown-alarms-field", with_fleet(alarms={"page": True}), "celery_sqs_kit.alarms",
     "has unknown field(s)", ["page"]),
    ("alarms-enabled-as-string", with_fleet(alarms={"enabled": "false"}),
     "celery_sqs_kit.alarms.enabled", "must be of type bool", "false"),
    ("alarm-email-not-an-address", with_fleet(alarms={"email": "not-an-address"}),
     "celery_sqs_kit.alarms.email", "must be one email address", "not-an-address"),
    ("no-consumer-window-below-5-minutes", with_fleet(alarms={"no_consumer_minutes": 2}),
     "celery_sqs_kit.alarms.no_consumer_minutes", "must be 5..1440 minutes", 2),
    ("receive-errors-negative", with_fleet(alarms={"receive_errors": -1}),
     "celery_sqs_kit.alarms.receive_errors", "must be 0..100000 errors per 5 minutes", -1),
]


@pytest.mark.parametrize("context, field, rule, value", [case[1:] for case in SPEC_RULES],
                         ids=[case[0] for case in SPEC_RULES])
def test_spec_rule_names_path_rule_and_value(context, field, rule, value):
    with pytest.raises(SpecError) as raised:
        load_spec(context)
    error = raised.value
    message = str(error)
    assert error.field == field
    assert message.startswith(field + " ")
    assert rule in message
    assert error.value == value and type(error.value) is type(value)
    assert message.endswith(f"got {value!r}")


K = re.escape(CONTEXT_KEY)
SPEC_PATHS = {
    KitSpec: f"{K}\\.",
    QueueSpec: r"queues\[[^\]]+\]\.",
    StsSpec: f"{K}\\.sts\\.",
    ResultSpec: f"{K}\\.result_backend\\.",
    WorkersSpec: f"{K}\\.workers\\.",
    FleetSpec: f"{K}\\.workers\\.(ecs|ec2)\\.",
    EcsFleetSpec: f"{K}\\.workers\\.ecs\\.",
    Ec2FleetSpec: f"{K}\\.workers\\.ec2\\.",
    AlarmsSpec: f"{K}\\.alarms\\.",
}
"""Where each spec dataclass's fields live in the context block. The two fleets share
FleetSpec's fields (one parser), so a row for either covers them."""


def own_fields(cls: type) -> list[str]:
    inherited = {f.name for base in cls.__bases__ if is_dataclass(base) for f in fields(base)}
    return [f.name for f in fields(cls) if f.name not in inherited]


def test_every_spec_field_has_a_bad_value_row():
    paths = [case[2] for case in SPEC_RULES]
    missing = [f"{cls.__name__}.{name}" for cls, prefix in SPEC_PATHS.items()
               for name in own_fields(cls)
               if not any(re.fullmatch(f"{prefix}{name}(\\[.*\\])?", path) for path in paths)]
    assert missing == [], "add a SPEC_RULES row for each"


def test_every_spec_dataclass_is_checked_for_bad_value_rows():
    spec_classes = {cls for cls in vars(spec_module).values()
                    if is_dataclass(cls) and cls.__module__ == spec_module.__name__}
    assert spec_classes == set(SPEC_PATHS)


def test_rule_breach_in_shipped_spec_is_reported_with_its_queue_name():
    context = copy.deepcopy(default_context())
    context["transport"] = "stock"
    context["queues"][1]["visibility_timeout"] = 3000  # reports: task_time_limit 3000
    with pytest.raises(SpecError, match=r"^queues\[reports\]\.visibility_timeout .*= 3060 "
                                        r"seconds.*, got 3000$"):
        load_spec(context)


def test_no_context_gives_one_default_queue():
    spec = load_spec(None)
    assert isinstance(spec, KitSpec)
    assert [q.name for q in spec.queues] == ["celery"]
    (celery,) = spec.queues
    assert spec.transport == "bundled"
    assert (celery.visibility_timeout, celery.receive_wait_time) == (60, 20)
    assert celery.dead_letter_queue and celery.max_receive_count == 5
    assert not celery.fifo and celery.workers_send and not celery.dedicated_role
    assert spec.default_queue == "celery"
    assert spec.stack_name == "CelerySqsKit"
    assert spec.config_parameter_name == "/celery-sqs-kit/CelerySqsKit/worker-config"
    assert spec.producer_role and spec.result_backend.enabled
    assert not spec.sts.enabled
    assert spec.extra_trusted_principals == ()
    assert spec.endpoint_url is None


def test_far_countdowns_park_where_workers_may_send_or_stock_consumes():
    for context in (one_queue(max_countdown=43_200, task_time_limit=60),
                    stock_queue(workers_send=False, max_countdown=43_000, task_time_limit=60)):
        assert load_spec(context).queue("reports").max_countdown in (43_200, 43_000)


def test_bundled_default_visibility_is_short_whatever_the_task_limit():
    spec = load_spec(one_queue(task_time_limit=7200, max_countdown=3600))
    assert spec.queue("reports").visibility_timeout == 60


def test_stock_default_visibility_covers_task_limit_countdown_and_margin():
    spec = load_spec(stock_queue(task_time_limit=600, max_countdown=120))
    assert spec.transport == "stock"
    assert spec.queue("reports").visibility_timeout == 600 + 120 + 60


def test_an_explicit_visibility_timeout_wins_over_the_transports_default():
    assert load_spec(one_queue(visibility_timeout=300)).queue("reports").visibility_timeout == 300
    assert load_spec(stock_queue(visibility_timeout=3600)).queue("reports") \
        .visibility_timeout == 3600


def test_empty_context_equals_no_context():
    assert load_spec({}) == load_spec(None)


def test_config_parameter_name_follows_stack_name():
    assert load_spec(with_fleet(stack_name="Billing")).config_parameter_name == \
        "/celery-sqs-kit/Billing/worker-config"


def test_shipped_cdk_json_spec_loads():
    spec = load_spec(default_context())
    assert [q.name for q in spec.queues] == ["celery", "reports", "orders.fifo"]
    assert dict(spec.queue("celery").backoff_policy) == {1: 10, 2: 20, 3: 40}
    assert spec.queue("celery").backoff_tasks == ("demo.tasks.add",)
    assert not spec.queue("reports").workers_send
    assert spec.queue("reports").routes == ("demo.tasks.report*",)
    orders = spec.queue("orders.fifo")
    assert orders.fifo and orders.content_based_deduplication
    assert spec.default_queue == "celery"


def test_spec_is_frozen():
    spec = load_spec(None)
    with pytest.raises(AttributeError):
        spec.stack_name = "Other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.queues[0].backoff_policy[1] = 5  # type: ignore[index]


def test_principals_override_splits_commas_and_trims():
    spec = load_spec(default_context(), f" {OPS} ,{ADMIN},", local_stage="true")
    assert spec.extra_trusted_principals == (OPS, ADMIN)


def test_principals_override_replaces_the_context_list():
    spec = load_spec(with_fleet(extra_trusted_principals=[ADMIN]), OPS, local_stage="true")
    assert spec.extra_trusted_principals == (OPS,)


@pytest.mark.parametrize("override", [None, ""])
def test_absent_principals_override_keeps_the_context_list(override):
    spec = load_spec(with_fleet(extra_trusted_principals=[ADMIN]), override, local_stage="true")
    assert spec.extra_trusted_principals == (ADMIN,)


def test_principals_override_entries_are_validated():
    with pytest.raises(SpecError) as raised:
        load_spec(None, f"{OPS},arn:aws:sqs:eu-west-1:123456789012:celery")
    assert raised.value.field == "celery_sqs_kit.extra_trusted_principals[1]"
    assert str(raised.value).endswith("got 'arn:aws:sqs:eu-west-1:123456789012:celery'")


def test_extra_principals_are_refused_outside_the_local_stage():
    for local_stage in (None, False, "false"):
        with pytest.raises(SpecError) as raised:
            load_spec(default_context(), OPS, local_stage=local_stage)
        assert raised.value.field == "celery_sqs_kit.extra_trusted_principals"
        assert "is refused outside the local stage" in str(raised.value)
        assert raised.value.value == [OPS]


@pytest.mark.parametrize("arn", [
    "arn:aws:iam::999999999999:root", "arn:aws:iam::123456789012:root", "123456789012",
    "arn:aws:iam::123456789012:user/*", "*", "arn:aws:iam::123456789012:group/ops",
    "arn:aws:sts::123456789012:assumed-role/ops/session"])
def test_a_root_wildcard_or_other_principal_kind_is_refused_even_on_the_local_stage(arn):
    with pytest.raises(SpecError) as raised:
        load_spec(default_context(), [arn], local_stage="true")
    assert raised.value.field == "celery_sqs_kit.extra_trusted_principals[0]"
    assert "must be an IAM user or role ARN of the stack's own account" in str(raised.value)


def test_sts_spec_with_dedicated_role_loads():
    spec = load_spec({"queues": [{"name": "celery"}, {"name": "reports", "dedicated_role": True}],
                      "sts": {"enabled": True, "token_timeout": 1800, "max_session_duration": 7200,
                              "external_id": "fleet-ext-id"}})
    assert spec.sts.enabled and spec.sts.external_id == "fleet-ext-id"
    assert spec.queue("reports").dedicated_role



def test_queue_without_dlq_may_take_a_dlq_like_name():
    spec = load_spec({"queues": [{"name": "celery", "dead_letter_queue": False},
                                 {"name": "celery-dlq"}]})
    assert [q.name for q in spec.queues] == ["celery", "celery-dlq"]


def test_extra_principals_context_entry_may_be_a_list():
    arn = "arn:aws:iam::123456789012:user/ops"
    spec = load_spec({"queues": [{"name": "celery"}]}, [arn], local_stage=True)
    assert spec.extra_trusted_principals == (arn,)


def test_extra_principals_context_entry_of_another_type_is_a_spec_error():
    with pytest.raises(SpecError) as raised:
        load_spec({"queues": [{"name": "celery"}]}, {"arn": "x"})
    assert raised.value.field == "celery_sqs_kit:extra_trusted_principals"


def test_backoff_policy_naming_an_attempt_twice_is_rejected():
    with pytest.raises(SpecError, match="names an attempt twice, got '01'"):
        load_spec({"queues": [{"name": "celery", "backoff_policy": {"1": 10, "01": 20}}]})


def test_no_workers_block_means_no_fleet():
    assert load_spec(None).workers == WorkersSpec()


def test_empty_fleet_blocks_take_every_default():
    spec = load_spec(with_ecs())
    ecs = spec.workers.ecs
    assert spec.workers.ec2 is None
    assert ecs.queues == ("celery", "reports")
    assert (ecs.min_capacity, ecs.max_capacity, ecs.concurrency) == (0, 2, 2)
    assert ecs.target_backlog_per_worker == 20
    assert (ecs.cpu, ecs.memory, ecs.stop_timeout) == (512, 1024, 120)
    assert (ecs.image_uri, ecs.image_directory) == (None, ".")
    ec2 = load_spec(with_ec2()).workers.ec2
    assert ec2.instance_type == "t3.small"
    assert ec2.stop_timeout == 3600  # the longest task_time_limit of its queues


def test_ec2_stop_timeout_follows_only_its_own_queues():
    assert load_spec(with_ec2(queues=["celery"])).workers.ec2.stop_timeout == 1500


def test_shipped_spec_turns_on_both_fleets_with_the_local_image():
    workers = load_spec(default_context()).workers
    assert workers.ecs.queues == ("celery", "orders.fifo")
    assert workers.ec2.queues == ("reports",)
    assert workers.ecs.image_uri == workers.ec2.image_uri == "celery-sqs-kit-worker:local"
    assert workers.ec2.stop_timeout == 3000
    assert workers.ecs.target_backlog_per_worker == workers.ec2.target_backlog_per_worker == 20


@pytest.mark.parametrize("flag", [False, "false"])
def test_fleets_flag_leaves_the_fleets_out(flag):
    # Not deployed, but the fleets' queues still decide their identities' access.
    workers = load_spec(default_context(), None, flag).workers
    full = load_spec(default_context()).workers
    assert workers == WorkersSpec(ecs=full.ecs, ec2=full.ec2, deployed=False)


@pytest.mark.parametrize("flag", [None, True, "true"])
def test_fleets_flag_on_or_absent_keeps_the_spec(flag):
    assert load_spec(default_context(), None, flag).workers.ecs is not None


def test_fleets_flag_of_another_value_is_a_spec_error():
    with pytest.raises(SpecError, match="^celery_sqs_kit:fleets must be true or false, got 'no'$"):
        load_spec(default_context(), None, "no")


def test_fleets_flag_off_still_validates_the_workers_block():
    with pytest.raises(SpecError, match="workers.ecs.cpu"):
        load_spec(with_ecs(cpu=300), None, "false")
