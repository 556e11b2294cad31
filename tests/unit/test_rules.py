"""infra.rules: each rule rejects what breaks a Celery-on-SQS fleet, and says
which field, which rule and which value; values unknown until deploy are skipped."""

from __future__ import annotations

import pytest

from infra import rules
from runtime.errors import SpecError

PREFIX = "queues[reports]."

VALID_QUEUE = dict(
    transport="stock", name="reports", fifo=False, visibility_timeout=1800, receive_wait_time=20,
    retention_period=345_600, max_message_size_bytes=262_144, dead_letter_queue=True,
    max_receive_count=5, dead_letter_retention_period=1_209_600, backoff_policy={},
    task_time_limit=1500, max_countdown=0,
)


def check(**overrides) -> None:
    rules.check_queue(PREFIX, **{**VALID_QUEUE, **overrides})


def assert_names(error: SpecError, field: str, rule: str, value: object) -> None:
    """The message names the spec path, the rule or range, and the value given."""
    message = str(error)
    assert error.field == field
    assert message.startswith(field + " ")
    assert rule in message
    assert error.value == value
    assert message.endswith(f"got {value!r}")


def test_valid_queue_passes_every_rule():
    check()


BUNDLED = dict(transport="bundled", visibility_timeout=60)


# (id, overrides, field after the prefix, rule text, value reported)
QUEUE_RULES = [
    ("stock-visibility-below-task-limit-plus-margin", dict(visibility_timeout=1559),
     "visibility_timeout", "task_time_limit (1500) + max_countdown (0) + 60 s margin = 1560 "
     "seconds with the stock transport", 1559),
    ("stock-visibility-does-not-cover-countdown", dict(visibility_timeout=1800, max_countdown=300),
     "visibility_timeout", "task_time_limit (1500) + max_countdown (300) + 60 s margin = 1860", 1800),
    ("stock-short-visibility", dict(visibility_timeout=60),
     "visibility_timeout", "with the stock transport, or SQS redelivers running tasks", 60),
    ("bundled-visibility-below-heartbeat-minimum", dict(BUNDLED, visibility_timeout=29),
     "visibility_timeout", "must be >= 30 seconds with the bundled transport: its heartbeat "
     "extends a message when half the window is left", 29),
    ("bundled-task-limit-beyond-12h-cap", dict(BUNDLED, task_time_limit=43_141),
     "task_time_limit", "must be <= 43140 seconds with the bundled transport: SQS keeps a "
     "message invisible at most 43200 s from its receipt", 43_141),
    ("bundled-task-limit-and-held-countdown-beyond-12h-cap",
     dict(BUNDLED, task_time_limit=3600, max_countdown=43_200),
     "task_time_limit", "must be <= 3540 seconds with the bundled transport: SQS keeps a "
     "message invisible at most 43200 s from its receipt, and it is held up to 39600 s for its "
     "countdown", 3600),
    ("bundled-fifo-countdown-beyond-what-a-worker-holds",
     dict(BUNDLED, name="orders.fifo", fifo=True, max_countdown=39_601),
     "max_countdown", "must be <= 39600 seconds on a FIFO queue with the bundled transport", 39_601),
    ("bundled-visibility-above-12h", dict(BUNDLED, visibility_timeout=43_201),
     "visibility_timeout", "must be 0..43200 seconds", 43_201),
    ("visibility-above-12h", dict(visibility_timeout=43_201),
     "visibility_timeout", "must be 0..43200 seconds", 43_201),
    ("visibility-negative", dict(visibility_timeout=-1),
     "visibility_timeout", "must be 0..43200 seconds", -1),
    ("visibility-string", dict(visibility_timeout="1800"),
     "visibility_timeout", "must be 0..43200 seconds", "1800"),
    ("visibility-bool", dict(visibility_timeout=True),
     "visibility_timeout", "must be 0..43200 seconds", True),
    ("wait-above-20", dict(receive_wait_time=21),
     "receive_wait_time", "must be 0..20 seconds", 21),
    ("wait-negative", dict(receive_wait_time=-1),
     "receive_wait_time", "must be 0..20 seconds", -1),
    ("task-limit-zero", dict(task_time_limit=0),
     "task_time_limit", "must be 1..43200 seconds", 0),
    ("retention-equal-to-visibility", dict(retention_period=1800),
     "retention_period", "must be > visibility_timeout (1800)", 1800),
    ("retention-below-minimum", dict(retention_period=59),
     "retention_period", "must be 60..1209600 seconds", 59),
    ("retention-above-14-days", dict(retention_period=1_209_601),
     "retention_period", "must be 60..1209600 seconds", 1_209_601),
    ("dlq-retention-shorter-than-source", dict(dead_letter_retention_period=345_599),
     "dead_letter_retention_period", "must be >= retention_period (345600)", 345_599),
    ("dlq-retention-above-14-days", dict(dead_letter_retention_period=1_209_601),
     "dead_letter_retention_period", "must be 60..1209600 seconds", 1_209_601),
    ("message-size-below-1k", dict(max_message_size_bytes=1023),
     "max_message_size_bytes", "must be 1024..1048576 bytes", 1023),
    ("message-size-above-1m", dict(max_message_size_bytes=1_048_577),
     "max_message_size_bytes", "must be 1024..1048576 bytes", 1_048_577),
    ("receive-count-zero", dict(max_receive_count=0),
     "max_receive_count", "must be 1..1000", 0),
    ("receive-count-above-1000", dict(max_receive_count=1001),
     "max_receive_count", "must be 1..1000", 1001),
    ("backoff-steps-equal-receive-count", dict(max_receive_count=3, backoff_policy={1: 5, 2: 10, 3: 20}),
     "backoff_policy", "fewer steps than max_receive_count (3)", 3),
    ("backoff-gap", dict(backoff_policy={1: 10, 3: 30}),
     "backoff_policy", "attempt numbers must be 1..n with no gap", [1, 3]),
    ("backoff-starts-at-zero", dict(backoff_policy={0: 10}),
     "backoff_policy", "attempt numbers must be 1..n with no gap", [0]),
    ("backoff-delay-above-12h", dict(backoff_policy={1: 43_201}),
     "backoff_policy[1]", "must be 0..43200 seconds", 43_201),
    ("backoff-not-a-mapping", dict(backoff_policy=[10, 20]),
     "backoff_policy", "must be a mapping", [10, 20]),
    ("fifo-name-without-suffix", dict(name="orders", fifo=True),
     "name", "of a FIFO queue must end in '.fifo'", "orders"),
    ("standard-name-with-fifo-suffix", dict(name="orders.fifo"),
     "name", "ends in '.fifo' but fifo is false", "orders.fifo"),
    ("name-with-dot", dict(name="reports.v2"),
     "name", "kombu rewrites '.' to '-'", "reports.v2"),
    ("name-with-slash", dict(name="reports/v2"),
     "name", "may contain only letters, digits, '-' and '_'", "reports/v2"),
    ("name-empty", dict(name=""), "name", "must be a non-empty string", ""),
    ("name-not-string", dict(name=7), "name", "must be a non-empty string", 7),
    ("name-leaves-no-room-for-dlq", dict(name="q" * 77),
     "name", f"must leave room for its DLQ name {'q' * 77 + '-dlq'!r} within 80 characters", "q" * 77),
    ("fifo-name-leaves-no-room-for-dlq", dict(name="q" * 72 + ".fifo", fifo=True),
     "name", f"{'q' * 72 + '-dlq.fifo'!r} within 80 characters", "q" * 72 + ".fifo"),
    ("name-too-long-without-dlq", dict(name="q" * 81, dead_letter_queue=False),
     "name", "within 80 characters", "q" * 81),
]


@pytest.mark.parametrize("overrides, field, rule, value",
                         [case[1:] for case in QUEUE_RULES], ids=[case[0] for case in QUEUE_RULES])
def test_queue_rule_names_field_rule_and_value(overrides, field, rule, value):
    with pytest.raises(SpecError) as raised:
        check(**overrides)
    assert_names(raised.value, PREFIX + field, rule, value)


@pytest.mark.parametrize("overrides", [
    pytest.param(dict(visibility_timeout=1560), id="stock-visibility-exactly-task-limit-plus-margin"),
    pytest.param(dict(visibility_timeout=1860, max_countdown=300),
                 id="stock-visibility-covers-countdown"),
    pytest.param(BUNDLED, id="bundled-short-visibility-with-long-tasks"),
    pytest.param(dict(BUNDLED, visibility_timeout=30), id="bundled-visibility-at-heartbeat-minimum"),
    pytest.param(dict(BUNDLED, task_time_limit=43_140), id="bundled-task-limit-exactly-fits-cap"),
    pytest.param(dict(BUNDLED, max_countdown=43_200, task_time_limit=3540),
                 id="bundled-countdown-beyond-the-hold-limit-is-parked"),
    pytest.param(dict(BUNDLED, name="orders.fifo", fifo=True, max_countdown=39_600,
                      task_time_limit=3540), id="bundled-fifo-countdown-at-the-hold-limit"),
    pytest.param(dict(receive_wait_time=0), id="short-polling"),
    pytest.param(dict(retention_period=1801), id="retention-just-above-visibility"),
    pytest.param(dict(dead_letter_retention_period=345_600), id="dlq-retention-equal-to-source"),
    pytest.param(dict(max_receive_count=4, backoff_policy={1: 5, 2: 10, 3: 20}), id="backoff-one-step-short"),
    pytest.param(dict(name="q" * 76), id="name-exactly-fits-dlq"),
    pytest.param(dict(name="q" * 71 + ".fifo", fifo=True), id="fifo-name-exactly-fits-dlq"),
    pytest.param(dict(name="q" * 80, dead_letter_queue=False), id="80-chars-without-dlq"),
    pytest.param(dict(dead_letter_queue=False, max_receive_count=0, backoff_policy={1: 1, 2: 2},
                      dead_letter_retention_period=1), id="no-dlq-ignores-dlq-settings"),
    pytest.param(dict(name="Orders_v2-high.fifo", fifo=True), id="fifo-with-underscore-and-dash"),
])
def test_boundary_values_are_accepted(overrides):
    check(**overrides)


def test_default_visibility_is_short_for_bundled_and_covers_tasks_for_stock():
    assert rules.default_visibility_timeout(transport="bundled", task_time_limit=1500,
                                            max_countdown=300) == 60
    assert rules.default_visibility_timeout(transport="stock", task_time_limit=1500,
                                            max_countdown=300) == 1860


@pytest.mark.parametrize("transport", ["kit", "Bundled", None])
def test_unknown_transport_names_field_rule_and_value(transport):
    with pytest.raises(SpecError) as raised:
        rules.check_transport("celery_sqs_kit.transport", transport)
    assert_names(raised.value, "celery_sqs_kit.transport", "must be 'bundled' or 'stock'",
                 transport)


def test_dead_letter_queue_name_keeps_fifo_suffix_last():
    assert rules.dead_letter_queue_name("celery") == "celery-dlq"
    assert rules.dead_letter_queue_name("orders.fifo") == "orders-dlq.fifo"


@pytest.mark.parametrize("token_timeout, max_session, field, rule, value", [
    pytest.param(899, 3600, "token_timeout", "must be 900..43200 seconds (STS rule)", 899, id="token-below-15-min"),
    pytest.param(43_201, 43_200, "token_timeout", "must be 900..43200 seconds (STS rule)", 43_201,
                 id="token-above-12h"),
    pytest.param(7200, 3600, "token_timeout", "must be <= max_session_duration (3600)", 7200,
                 id="token-longer-than-session"),
    pytest.param(900, 3599, "max_session_duration", "must be 3600..43200 seconds (IAM rule)", 3599,
                 id="session-below-1h"),
    pytest.param(900, 43_201, "max_session_duration", "must be 3600..43200 seconds (IAM rule)", 43_201,
                 id="session-above-12h"),
])
def test_sts_session_rule_names_field_rule_and_value(token_timeout, max_session, field, rule, value):
    with pytest.raises(SpecError) as raised:
        rules.check_sts_session("celery_sqs_kit.sts.", token_timeout=token_timeout,
                                max_session_duration=max_session)
    assert_names(raised.value, "celery_sqs_kit.sts." + field, rule, value)


def test_sts_token_may_equal_session_duration():
    rules.check_sts_session("", token_timeout=3600, max_session_duration=3600)


UNKNOWN = object()
"""Stands in for a deploy-time value (a CDK Token) in the pure rules."""


def unresolved(value) -> bool:
    return value is UNKNOWN


@pytest.mark.parametrize("transport", ["stock", "bundled"])
@pytest.mark.parametrize("field", ["visibility_timeout", "task_time_limit", "max_countdown",
                                   "retention_period", "dead_letter_retention_period",
                                   "max_receive_count", "receive_wait_time",
                                   "max_message_size_bytes"])
def test_unresolved_values_skip_their_rules(field, transport):
    rules.check_queue(PREFIX, **{**VALID_QUEUE, "transport": transport, field: UNKNOWN,
                                 "backoff_policy": {1: 5}}, unresolved=unresolved)


def test_unresolved_value_does_not_hide_a_concrete_bad_one():
    with pytest.raises(SpecError) as raised:
        rules.check_queue(PREFIX, **{**VALID_QUEUE, "visibility_timeout": UNKNOWN,
                                     "receive_wait_time": 25}, unresolved=unresolved)
    assert raised.value.field == PREFIX + "receive_wait_time"


def test_unresolved_sts_values_skip_the_cross_check():
    rules.check_sts_session("", token_timeout=UNKNOWN, max_session_duration=3600,
                            unresolved=unresolved)
    rules.check_sts_session("", token_timeout=43_200, max_session_duration=UNKNOWN,
                            unresolved=unresolved)


# --- worker fleets --------------------------------------------------------------------

FLEET = "workers.ecs."
VALID_FLEET = dict(min_capacity=0, max_capacity=2, concurrency=2, target_backlog_per_worker=20)


@pytest.mark.parametrize("overrides, field, rule, value", [
    pytest.param(dict(min_capacity=-1), "min_capacity", "must be 0..1000 workers", -1,
                 id="min-negative"),
    pytest.param(dict(max_capacity=0), "max_capacity", "must be 1..1000 workers", 0,
                 id="max-zero"),
    pytest.param(dict(max_capacity=1001), "max_capacity", "must be 1..1000 workers", 1001,
                 id="max-above-limit"),
    pytest.param(dict(min_capacity=5, max_capacity=4), "max_capacity",
                 "must be >= min_capacity (5)", 4, id="max-below-min"),
    pytest.param(dict(concurrency=0), "concurrency", "must be 1..256 processes", 0,
                 id="concurrency-zero"),
    pytest.param(dict(target_backlog_per_worker=0), "target_backlog_per_worker",
                 "must be 1..100000 messages", 0, id="target-zero"),
    pytest.param(dict(min_capacity=True), "min_capacity", "must be 0..1000 workers", True,
                 id="min-a-bool"),
])
def test_fleet_rule_names_field_rule_and_value(overrides, field, rule, value):
    with pytest.raises(SpecError) as raised:
        rules.check_fleet(FLEET, **{**VALID_FLEET, **overrides})
    assert_names(raised.value, FLEET + field, rule, value)


def test_fleet_may_be_fixed_at_one_size_or_scale_to_zero():
    rules.check_fleet(FLEET, **{**VALID_FLEET, "min_capacity": 3, "max_capacity": 3})
    rules.check_fleet(FLEET, **{**VALID_FLEET, "min_capacity": 0, "max_capacity": 1})


@pytest.mark.parametrize("cpu, memory", [(cpu, memory) for cpu, sizes in
                                         rules.FARGATE_MEMORY.items() for memory in sizes])
def test_every_fargate_pair_is_accepted(cpu, memory):
    rules.check_fargate_size(FLEET, cpu=cpu, memory=memory)


@pytest.mark.parametrize("cpu, memory, field, rule, value", [
    pytest.param(128, 512, "cpu", "must be one of Fargate's CPU sizes", 128, id="cpu-unknown"),
    pytest.param(256, 3072, "memory", "must be one of [512, 1024, 2048] MiB with cpu 256", 3072,
                 id="memory-above-smallest-cpu"),
    pytest.param(1024, 1024, "memory", "must be 2048..8192 MiB in steps of 1024 with cpu 1024",
                 1024, id="memory-below-cpu-minimum"),
    pytest.param(16384, 36864, "memory", "must be 32768..122880 MiB in steps of 8192", 36864,
                 id="memory-off-the-8g-step"),
])
def test_fargate_size_rule_names_field_rule_and_value(cpu, memory, field, rule, value):
    with pytest.raises(SpecError) as raised:
        rules.check_fargate_size(FLEET, cpu=cpu, memory=memory)
    assert_names(raised.value, FLEET + field, rule, value)


@pytest.mark.parametrize("seconds", [1, 121])
def test_ecs_stop_timeout_is_fargates_2_to_120_seconds(seconds):
    with pytest.raises(SpecError) as raised:
        rules.check_ecs_stop_timeout("stop_timeout", seconds)
    assert_names(raised.value, "stop_timeout", "must be 2..120 seconds (Fargate rule)", seconds)


def test_ec2_stop_timeout_leaves_the_hook_its_slack_within_7200_seconds():
    rules.check_ec2_stop_timeout("stop_timeout", 7200 - rules.TERMINATION_HOOK_SLACK)
    with pytest.raises(SpecError) as raised:
        rules.check_ec2_stop_timeout("stop_timeout", 7141)
    assert_names(raised.value, "stop_timeout", "must be 1..7140 seconds", 7141)


def test_unresolved_fleet_values_skip_their_rules():
    rules.check_fleet(FLEET, min_capacity=UNKNOWN, max_capacity=1, concurrency=UNKNOWN,
                      target_backlog_per_worker=UNKNOWN, unresolved=unresolved)
    rules.check_fleet(FLEET, **{**VALID_FLEET, "max_capacity": UNKNOWN}, unresolved=unresolved)
    rules.check_fargate_size(FLEET, cpu=UNKNOWN, memory=3, unresolved=unresolved)
    rules.check_ecs_stop_timeout("stop_timeout", UNKNOWN, unresolved)


# --- extra trusted principals ----------------------------------------------------

ACCOUNT = "123456789012"


@pytest.mark.parametrize("arn", [f"arn:aws:iam::{ACCOUNT}:user/ops",
                                 f"arn:aws:iam::{ACCOUNT}:role/team/Admin"])
def test_same_account_user_or_role_is_a_trusted_principal(arn):
    rules.check_trusted_principals("extra", [arn], account=ACCOUNT)


@pytest.mark.parametrize("arn, rule", [
    ("arn:aws:iam::999999999999:root", "must be an IAM user or role ARN of the stack's own "
                                       "account"),
    (ACCOUNT, "must be an IAM user or role ARN"),
    (f"arn:aws:iam::{ACCOUNT}:*", "must be an IAM user or role ARN"),
    ("arn:aws:iam::999999999999:role/Admin", "the stack's account is 123456789012"),
])
def test_root_wildcard_or_foreign_principal_names_field_rule_and_value(arn, rule):
    with pytest.raises(SpecError) as raised:
        rules.check_trusted_principals("extra", [arn], account=ACCOUNT)
    assert raised.value.field == "extra[0]" and raised.value.value == arn
    assert rule in raised.value.rule
    assert "without an ExternalId" in raised.value.rule


def test_trusted_principal_against_an_unresolved_account_is_refused():
    with pytest.raises(SpecError, match="must be known at synth"):
        rules.check_trusted_principals("extra", [f"arn:aws:iam::{ACCOUNT}:user/ops"],
                                       account="${Token[AWS.AccountId.1]}",
                                       unresolved=lambda value: value.startswith("${Token"))
