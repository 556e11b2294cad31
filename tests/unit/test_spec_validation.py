"""infra.settings + infra.rules: every rule fails synth with field, rule and value."""

from __future__ import annotations

import copy

import pytest

from infra.settings import load_spec
from runtime.errors import SpecError
from tests.unit.cdk_context import default_context

OPERATOR = "arn:aws:iam::123456789012:user/kit-operator"


def spec_with(mutate):
    ctx = copy.deepcopy(default_context())
    mutate(ctx)
    return load_spec(ctx)


def q(ctx, index=0):
    return ctx["queues"][index]


@pytest.mark.parametrize("mutate, field, rule, value", [
    (lambda c: q(c).update(visibility_timeout=1000), "queues[celery].visibility_timeout",
     "must be >= task_time_limit (1500) + max_countdown (0) + 60 s margin = 1560", "1000"),
    (lambda c: q(c).update(max_countdown=600), "queues[celery].visibility_timeout",
     "max_countdown (600)", "1800"),
    (lambda c: q(c).update(visibility_timeout=50000, task_time_limit=100),
     "queues[celery].visibility_timeout", "must be 0..43200 seconds", "50000"),
    (lambda c: [x.update(receive_wait_time=25) for x in c["queues"]],
     "queues[celery].receive_wait_time", "must be 0..20 seconds", "25"),
    (lambda c: q(c, 1).update(receive_wait_time=10), "queues[reports].receive_wait_time",
     "must equal queues[celery].receive_wait_time (20)", "10"),
    (lambda c: q(c).update(retention_period=1800), "queues[celery].retention_period",
     "must be > visibility_timeout (1800)", "1800"),
    (lambda c: q(c).update(retention_period=30), "queues[celery].retention_period",
     "must be 60..1209600 seconds", "30"),
    (lambda c: q(c).update(dead_letter_retention_period=86400),
     "queues[celery].dead_letter_retention_period", "must be >= retention_period (345600)",
     "86400"),
    (lambda c: q(c).update(max_message_size_bytes=512), "queues[celery].max_message_size_bytes",
     "must be 1024..1048576 bytes", "512"),
    (lambda c: q(c).update(max_receive_count=0), "queues[celery].max_receive_count",
     "must be 1..1000", "0"),
    (lambda c: q(c).update(backoff_policy={"1": 1, "2": 2, "3": 3, "4": 4, "5": 5}),
     "queues[celery].backoff_policy", "must have fewer steps than max_receive_count (5)", "5"),
    (lambda c: q(c).update(backoff_policy={"1": 10, "3": 30}), "queues[celery].backoff_policy",
     "attempt numbers must be 1..n with no gap", "[1, 3]"),
    (lambda c: q(c).update(backoff_policy={"1": 50000}), "queues[celery].backoff_policy[1]",
     "must be 0..43200 seconds", "50000"),
    (lambda c: q(c, 2).update(name="orders"), "queues[orders].name",
     "of a FIFO queue must end in '.fifo'", "'orders'"),
    (lambda c: q(c).update(name="celery.fifo"), "queues[celery.fifo].name",
     "ends in '.fifo' but fifo is false", "'celery.fifo'"),
    (lambda c: q(c).update(name="my.queue"), "queues[my.queue].name",
     "kombu rewrites '.' to '-'", "'my.queue'"),
    (lambda c: q(c).update(name="x" * 78), f"queues[{'x' * 78}].name",
     "must leave room for its DLQ name", "x" * 20),
    (lambda c: c["queues"].append({"name": "celery"}), "celery_sqs_kit.queues",
     "must have unique names", "['celery']"),
    (lambda c: c.update(default_queue="nope"), "celery_sqs_kit.default_queue",
     "must name one of the queues", "'nope'"),
    (lambda c: c.update(visiblity_timeout=5), "celery_sqs_kit", "has unknown field(s)",
     "['visiblity_timeout']"),
    (lambda c: q(c).update(visiblity_timeout=5), "queues[celery]", "has unknown field(s)",
     "['visiblity_timeout']"),
    (lambda c: q(c).update(visibility_timeout="1800"), "queues[celery].visibility_timeout",
     "must be of type int", "'1800'"),
    (lambda c: q(c).update(visibility_timeout=True), "queues[celery].visibility_timeout",
     "must be of type int", "True"),
    (lambda c: c.update(sts={"enabled": True, "token_timeout": 600}),
     "celery_sqs_kit.sts.token_timeout", "must be 900..43200 seconds", "600"),
    (lambda c: c.update(sts={"enabled": True, "token_timeout": 7200,
                             "max_session_duration": 3600}),
     "celery_sqs_kit.sts.token_timeout", "must be <= max_session_duration (3600)", "7200"),
    (lambda c: c.update(sts={"max_session_duration": 100}),
     "celery_sqs_kit.sts.max_session_duration", "must be 3600..43200 seconds", "100"),
    (lambda c: q(c, 1).update(dedicated_role=True), "queues[reports].dedicated_role",
     "needs sts.enabled", "True"),
    (lambda c: q(c).update(content_based_deduplication=True),
     "queues[celery].content_based_deduplication", "applies to FIFO queues only", "True"),
    (lambda c: c.update(extra_trusted_principals=["alice"]),
     "celery_sqs_kit.extra_trusted_principals[0]", "must be an IAM principal ARN", "'alice'"),
    (lambda c: c.update(queues=[]), "celery_sqs_kit.queues", "must be a non-empty list", "[]"),
    (lambda c: c.update(result_backend={"ttl_seconds": 10}),
     "celery_sqs_kit.result_backend.ttl_seconds", "must be 60..31536000", "10"),
])
def test_a_broken_rule_names_field_rule_and_value(mutate, field, rule, value):
    with pytest.raises(SpecError) as caught:
        spec_with(mutate)
    message = str(caught.value)
    assert caught.value.field == field
    assert message.startswith(f"{field} ")
    assert rule in message
    assert message.endswith(f"got {value}") or value in message


def test_defaults_are_documented_values():
    spec = load_spec(None)
    (queue,) = spec.queues
    assert (queue.name, queue.visibility_timeout, queue.receive_wait_time) == ("celery", 1800, 20)
    assert queue.dead_letter_queue and queue.max_receive_count == 5
    assert spec.default_queue == "celery" and spec.sts.enabled is False
    assert spec.extra_trusted_principals == ()


def test_shipped_spec_loads():
    spec = load_spec(default_context())
    assert [q.name for q in spec.queues] == ["celery", "reports", "orders.fifo"]
    assert spec.queue("reports").workers_send is False


def test_extra_principals_come_from_the_context_override():
    spec = load_spec(default_context(), f"{OPERATOR}, arn:aws:iam::123456789012:user/b")
    assert spec.extra_trusted_principals == (OPERATOR, "arn:aws:iam::123456789012:user/b")
