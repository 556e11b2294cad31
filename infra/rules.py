"""The rules a Celery-on-SQS fleet must keep, checked before any resource exists.

Pure functions over plain numbers and strings: the spec parser calls them with
spec paths (``queues[reports].visibility_timeout``) and the constructs call them
with their prop names, passing ``unresolved`` (``Token.is_unresolved``) so that
values only known at deploy time are skipped rather than misjudged. Each rule
raises :class:`runtime.errors.SpecError` naming the field, the rule and the value.

Why each rule exists:

- the visibility timeout depends on the transport that consumes the queue. Stock
  kombu never extends it, so it must outlast task time limit + countdown + margin,
  or SQS hands a running task to a second worker (the redelivery loop in Celery's
  caveats), and a killed worker's tasks wait that long to run again. The bundled
  transport's heartbeat keeps held messages invisible (``runtime.visibility``), so the
  timeout is only how long a killed worker's messages stay hidden: short (60 s by
  default), but long enough for an extension to land in time (>= 30 s), while the time
  a message is held for its countdown (up to 11 h; later ETAs are parked) plus its
  task's time limit must fit in SQS's 12-hour cap on a message's invisibility, less a
  margin. A FIFO queue cannot park, so its countdown stops at 11 h.
- wait time 0..20: SQS's long-poll range; the queue and the runtime share it.
- backoff steps < maxReceiveCount: otherwise retries land in the DLQ first.
- FIFO names end in ``.fifo`` (and only FIFO names do); the DLQ has the same type.
- retention > visibility timeout and DLQ retention >= source retention, so no
  message expires before anyone could see it.
- STS token lifetime 900..43200 and <= the role's maximum session duration.
- names are what kombu looks up: kombu rewrites ``.`` to ``-`` and other
  punctuation to ``_`` before consulting ``predefined_queues``.
- worker fleets: 0 <= min <= max workers, max >= 1 (a fleet that can never run
  is a typo); Fargate accepts only its CPU/memory pairs and stops a container
  within 2..120 s; an EC2 worker's warm shutdown must fit in the termination
  lifecycle hook (stop timeout + slack <= 7200 s, the hook's longest heartbeat).
- extra trusted principals (``extra_trusted_principals``): trusted by the worker and
  producer roles without an ExternalId, so anyone they name may act as a worker or
  send tasks. Only a same-account IAM user or role, named exactly: an account root
  (``:root`` or a bare account id) trusts every principal of that account, a wildcard
  everyone, and another account's principal crosses the account boundary the whole
  security model rests on. The spec also refuses the prop outside the local stage.
- alarms: a message-age threshold below the retention period (else the message
  expires before the alarm can fire) and at least a minute (SQS's metric period);
  the no-consumer window 5..1440 minutes (shorter trips on a fleet scaling from
  zero; CloudWatch evaluates at most a day).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from runtime.errors import SpecError
from runtime.limits import (FIFO_SUFFIX, MAX_COUNTDOWN, MAX_MESSAGE_SIZE,
                            MAX_QUEUE_NAME_LENGTH, MAX_RECEIVE_COUNT, MAX_RETENTION,
                            MAX_STS_SESSION, MAX_VISIBILITY_TIMEOUT, MAX_WAIT_TIME,
                            MIN_MESSAGE_SIZE, MIN_RECEIVE_COUNT, MIN_STS_SESSION, QUEUE_NAME_BASE,
                            VISIBILITY_MARGIN_SECONDS)
from runtime.schema import BUNDLED, TRANSPORT_NAMES
from runtime.visibility import MAX_ETA_HOLD_LIMIT, MAX_HOLD_SECONDS

Unresolved = Callable[[Any], bool]


BUNDLED_VISIBILITY_TIMEOUT = 60
"""The default with the bundled transport. A killed worker's messages reappear when the
window its heartbeat last granted ends, at most this long after the kill (half of it
at least: the heartbeat extends with half left); a waiting long poll then returns them
at once. So a task of a killed worker runs again within about a minute."""
MIN_BUNDLED_VISIBILITY = 30
"""The heartbeat extends a held message when half its window is left and retries a
failed extension with a backoff of up to a quarter of it (``runtime.lane``); below 30 s
one slow call (10 s read timeout) could use up what is left of the window."""

MIN_RETENTION = 60
DLQ_SUFFIX = "-dlq"

MAX_WORKERS = 1_000
MAX_CONCURRENCY = 256
MAX_TARGET_BACKLOG = 100_000
MIN_ECS_STOP_TIMEOUT, MAX_ECS_STOP_TIMEOUT = 2, 120
MAX_HOOK_HEARTBEAT = 7_200
TERMINATION_HOOK_SLACK = 60
"""Seconds the EC2 termination hook waits beyond the worker's stop timeout: noticing
the termination (polled every 5 s), ``docker stop`` itself, completing the action."""

FARGATE_MEMORY: Mapping[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
"""Fargate's task sizes: CPU units -> the memory (MiB) it may be paired with."""


def never_unresolved(_value: Any) -> bool:
    """Values parsed from JSON are always concrete."""
    return False


def check_range(field: str, value: Any, low: int, high: int, unit: str = "",
                unresolved: Unresolved = never_unresolved) -> None:
    if unresolved(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        suffix = f" {unit}" if unit else ""
        raise SpecError(field, f"must be {low}..{high}{suffix}", value)


def dead_letter_queue_name(name: str) -> str:
    """The DLQ of ``name``: same type, ``-dlq`` before any ``.fifo`` suffix."""
    if name.endswith(FIFO_SUFFIX):
        return name[: -len(FIFO_SUFFIX)] + DLQ_SUFFIX + FIFO_SUFFIX
    return name + DLQ_SUFFIX


def check_queue_name(field: str, name: Any, *, fifo: bool, dead_letter_queue: bool) -> None:
    if not isinstance(name, str) or not name:
        raise SpecError(field, "must be a non-empty string", name)
    base = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    if fifo and not name.endswith(FIFO_SUFFIX):
        raise SpecError(field, "of a FIFO queue must end in '.fifo' (SQS rule)", name)
    if not fifo and name.endswith(FIFO_SUFFIX):
        raise SpecError(field, "ends in '.fifo' but fifo is false (SQS rule)", name)
    if not QUEUE_NAME_BASE.match(base):
        raise SpecError(
            field,
            "may contain only letters, digits, '-' and '_' (plus a '.fifo' suffix): kombu "
            "rewrites '.' to '-' and other punctuation to '_' before it looks a queue up, "
            "so any other name never matches its predefined queue",
            name,
        )
    longest = dead_letter_queue_name(name) if dead_letter_queue else name
    if len(longest) > MAX_QUEUE_NAME_LENGTH:
        raise SpecError(
            field, f"must leave room for its DLQ name {longest!r} within "
            f"{MAX_QUEUE_NAME_LENGTH} characters (SQS rule)", name)


def check_transport(field: str, transport: Any) -> None:
    if transport not in TRANSPORT_NAMES:
        raise SpecError(field, "must be " + " or ".join(repr(t) for t in TRANSPORT_NAMES)
                        + " (the transport that consumes the queues)", transport)


def default_visibility_timeout(*, transport: str, task_time_limit: int,
                               max_countdown: int) -> int:
    """The bundled transport's short window, or the shortest stock kombu can keep
    (:func:`check_visibility_covers_tasks`): recovery from a killed worker takes as long."""
    if transport == BUNDLED:
        return BUNDLED_VISIBILITY_TIMEOUT
    return task_time_limit + max_countdown + VISIBILITY_MARGIN_SECONDS


def check_visibility_covers_tasks(prefix: str, *, transport: str, fifo: bool = False,
                                  visibility_timeout: Any, task_time_limit: Any,
                                  max_countdown: Any,
                                  unresolved: Unresolved = never_unresolved) -> None:
    """A message must stay invisible for as long as its task can be held and run: by the
    visibility timeout alone (stock), or by the bundled transport's heartbeat."""
    if transport == BUNDLED:
        _check_bundled_hold(prefix, fifo=fifo, visibility_timeout=visibility_timeout,
                            task_time_limit=task_time_limit, max_countdown=max_countdown,
                            unresolved=unresolved)
        return
    if any(unresolved(v) for v in (visibility_timeout, task_time_limit, max_countdown)):
        return
    needed = task_time_limit + max_countdown + VISIBILITY_MARGIN_SECONDS
    if visibility_timeout < needed:
        raise SpecError(
            f"{prefix}visibility_timeout",
            f"must be >= task_time_limit ({task_time_limit}) + max_countdown ({max_countdown}) "
            f"+ {VISIBILITY_MARGIN_SECONDS} s margin = {needed} seconds with the stock "
            "transport, or SQS redelivers running tasks to a second worker",
            visibility_timeout,
        )


def _check_bundled_hold(prefix: str, *, fifo: bool, visibility_timeout: Any,
                        task_time_limit: Any, max_countdown: Any,
                        unresolved: Unresolved) -> None:
    """The heartbeat needs a window it can extend in time, and holds a message at most
    SQS's 12 hours from receipt: for its countdown (up to ``MAX_ETA_HOLD_LIMIT``; a later
    ETA is parked on a standard queue and refused at publish on a FIFO one), then its run."""
    if not unresolved(visibility_timeout) and visibility_timeout < MIN_BUNDLED_VISIBILITY:
        raise SpecError(
            f"{prefix}visibility_timeout",
            f"must be >= {MIN_BUNDLED_VISIBILITY} seconds with the bundled transport: its "
            "heartbeat extends a message when half the window is left, and a shorter "
            "window leaves no time for a retry", visibility_timeout)
    if unresolved(max_countdown):
        return
    if fifo and max_countdown > MAX_ETA_HOLD_LIMIT:
        raise SpecError(
            f"{prefix}max_countdown",
            f"must be <= {MAX_ETA_HOLD_LIMIT} seconds on a FIFO queue with the bundled "
            "transport: FIFO queues take no per-message delay, so a task due later cannot be "
            "parked and is refused at publish (EtaTooFar)", max_countdown)
    held = min(max_countdown, MAX_ETA_HOLD_LIMIT)
    longest = MAX_HOLD_SECONDS - held - VISIBILITY_MARGIN_SECONDS
    if not unresolved(task_time_limit) and task_time_limit > longest:
        raise SpecError(
            f"{prefix}task_time_limit",
            f"must be <= {longest} seconds with the bundled transport: SQS keeps a message "
            f"invisible at most {MAX_HOLD_SECONDS} s from its receipt, and it is held up to "
            f"{held} s for its countdown (max_countdown, at most {MAX_ETA_HOLD_LIMIT}: later "
            f"ETAs are parked), less a {VISIBILITY_MARGIN_SECONDS} s margin", task_time_limit)


def check_far_countdowns_can_park(prefix: str, *, transport: str, fifo: bool,
                                  workers_send: bool, max_countdown: Any,
                                  unresolved: Unresolved = never_unresolved) -> None:
    """With the bundled transport, a standard queue's task due further out than
    ``MAX_ETA_HOLD_LIMIT`` is parked: sent to its own queue again, which needs the
    workers' ``sqs:SendMessage`` there (``workers_send``)."""
    if transport != BUNDLED or fifo or workers_send or unresolved(max_countdown):
        return
    if max_countdown > MAX_ETA_HOLD_LIMIT:
        raise SpecError(
            f"{prefix}max_countdown",
            f"must be <= {MAX_ETA_HOLD_LIMIT} seconds when workers_send is false: a task due "
            "later is parked (sent to its own queue again with a delay), which needs the "
            "workers' sqs:SendMessage on the queue; without it the task ends in the DLQ",
            max_countdown)


def check_backoff_policy(prefix: str, policy: Any, *, dead_letter_queue: bool, max_receive_count: Any,
                         unresolved: Unresolved = never_unresolved) -> None:
    """kombu's backoff policy: {attempt: delay seconds}, attempts 1..n with no gap."""
    field = f"{prefix}backoff_policy"
    if not isinstance(policy, Mapping):
        raise SpecError(field, "must be a mapping of attempt number to delay seconds", policy)
    attempts = sorted(policy)
    if attempts != list(range(1, len(attempts) + 1)):
        raise SpecError(field, "attempt numbers must be 1..n with no gap", attempts)
    for attempt, delay in policy.items():
        check_range(f"{field}[{attempt}]", delay, 0, MAX_VISIBILITY_TIMEOUT, "seconds", unresolved)
    if dead_letter_queue and not unresolved(max_receive_count) and len(policy) >= max_receive_count:
        raise SpecError(
            field,
            f"must have fewer steps than max_receive_count ({max_receive_count}), or retries "
            "land in the dead-letter queue before the policy is used up",
            len(policy),
        )


def check_retention(prefix: str, *, retention_period: Any, visibility_timeout: Any,
                    dead_letter_queue: bool, dead_letter_retention_period: Any,
                    unresolved: Unresolved = never_unresolved) -> None:
    check_range(f"{prefix}retention_period", retention_period, MIN_RETENTION, MAX_RETENTION,
                "seconds", unresolved)
    if not (unresolved(retention_period) or unresolved(visibility_timeout)) \
            and retention_period <= visibility_timeout:
        raise SpecError(f"{prefix}retention_period",
                        f"must be > visibility_timeout ({visibility_timeout}) so no message "
                        "expires while it is invisible", retention_period)
    if not dead_letter_queue:
        return
    check_range(f"{prefix}dead_letter_retention_period", dead_letter_retention_period,
                MIN_RETENTION, MAX_RETENTION, "seconds", unresolved)
    if not (unresolved(retention_period) or unresolved(dead_letter_retention_period)) \
            and dead_letter_retention_period < retention_period:
        raise SpecError(f"{prefix}dead_letter_retention_period",
                        f"must be >= retention_period ({retention_period}): SQS keeps a "
                        "message's original enqueue time, so a shorter DLQ retention expires "
                        "dead letters unseen", dead_letter_retention_period)


def check_queue(prefix: str, *, transport: str, name: Any, fifo: bool, visibility_timeout: Any,
                receive_wait_time: Any, retention_period: Any, max_message_size_bytes: Any,
                dead_letter_queue: bool, max_receive_count: Any, dead_letter_retention_period: Any,
                backoff_policy: Mapping[int, int], task_time_limit: Any, max_countdown: Any,
                unresolved: Unresolved = never_unresolved, name_field: str = "name") -> None:
    """Every per-queue rule, in the order a user would fix them, for the queue's consuming
    ``transport`` (``bundled`` or ``stock``, checked by :func:`check_transport`).
    ``name_field`` is what the caller calls the name (the spec's ``name``, the
    construct's ``queue_name``)."""
    check_queue_name(f"{prefix}{name_field}", name, fifo=fifo,
                     dead_letter_queue=dead_letter_queue)
    # The task's limits first: a derived visibility timeout is computed from them.
    check_range(f"{prefix}task_time_limit", task_time_limit, 1, MAX_VISIBILITY_TIMEOUT, "seconds",
                unresolved)
    check_range(f"{prefix}max_countdown", max_countdown, 0, MAX_COUNTDOWN, "seconds",
                unresolved)
    check_range(f"{prefix}visibility_timeout", visibility_timeout, 0, MAX_VISIBILITY_TIMEOUT,
                "seconds", unresolved)
    check_range(f"{prefix}receive_wait_time", receive_wait_time, 0, MAX_WAIT_TIME, "seconds",
                unresolved)
    check_visibility_covers_tasks(prefix, transport=transport, fifo=fifo,
                                  visibility_timeout=visibility_timeout,
                                  task_time_limit=task_time_limit, max_countdown=max_countdown,
                                  unresolved=unresolved)
    check_range(f"{prefix}max_message_size_bytes", max_message_size_bytes, MIN_MESSAGE_SIZE,
                MAX_MESSAGE_SIZE, "bytes", unresolved)
    check_retention(prefix, retention_period=retention_period,
                    visibility_timeout=visibility_timeout, dead_letter_queue=dead_letter_queue,
                    dead_letter_retention_period=dead_letter_retention_period,
                    unresolved=unresolved)
    if dead_letter_queue:
        check_range(f"{prefix}max_receive_count", max_receive_count, MIN_RECEIVE_COUNT,
                    MAX_RECEIVE_COUNT, "", unresolved)
    check_backoff_policy(prefix, backoff_policy, dead_letter_queue=dead_letter_queue,
                         max_receive_count=max_receive_count, unresolved=unresolved)


def check_max_session_duration(name: str, seconds: Any,
                               unresolved: Unresolved = never_unresolved) -> None:
    check_range(name, seconds, 3_600, MAX_STS_SESSION, "seconds (IAM rule)", unresolved)


def check_sts_session(prefix: str, *, token_timeout: Any, max_session_duration: Any,
                      unresolved: Unresolved = never_unresolved) -> None:
    check_max_session_duration(f"{prefix}max_session_duration", max_session_duration,
                               unresolved)
    check_range(f"{prefix}token_timeout", token_timeout, MIN_STS_SESSION, MAX_STS_SESSION,
                "seconds (STS rule)", unresolved)
    if not (unresolved(token_timeout) or unresolved(max_session_duration)) \
            and token_timeout > max_session_duration:
        raise SpecError(f"{prefix}token_timeout",
                        f"must be <= max_session_duration ({max_session_duration}) or "
                        "AssumeRole is refused", token_timeout)


def check_fleet(prefix: str, *, min_capacity: Any, max_capacity: Any, concurrency: Any,
                target_backlog_per_worker: Any,
                unresolved: Unresolved = never_unresolved) -> None:
    """Rules both worker fleets keep: worker counts, pool size, backlog target."""
    check_range(f"{prefix}min_capacity", min_capacity, 0, MAX_WORKERS, "workers", unresolved)
    check_range(f"{prefix}max_capacity", max_capacity, 1, MAX_WORKERS, "workers", unresolved)
    if not (unresolved(min_capacity) or unresolved(max_capacity)) and max_capacity < min_capacity:
        raise SpecError(f"{prefix}max_capacity",
                        f"must be >= min_capacity ({min_capacity})", max_capacity)
    check_range(f"{prefix}concurrency", concurrency, 1, MAX_CONCURRENCY, "processes", unresolved)
    check_range(f"{prefix}target_backlog_per_worker", target_backlog_per_worker, 1,
                MAX_TARGET_BACKLOG, "messages", unresolved)


def check_fargate_size(prefix: str, *, cpu: Any, memory: Any,
                       unresolved: Unresolved = never_unresolved) -> None:
    if unresolved(cpu) or unresolved(memory):
        return
    if isinstance(cpu, bool) or cpu not in FARGATE_MEMORY:
        raise SpecError(f"{prefix}cpu", f"must be one of Fargate's CPU sizes "
                        f"{sorted(FARGATE_MEMORY)}", cpu)
    allowed = FARGATE_MEMORY[cpu]
    if isinstance(memory, bool) or memory not in allowed:
        sizes = (f"{allowed[0]}..{allowed[-1]} MiB in steps of {allowed[1] - allowed[0]}"
                 if len(allowed) > 3 else f"one of {list(allowed)} MiB")
        raise SpecError(f"{prefix}memory", f"must be {sizes} with cpu {cpu} (Fargate rule)",
                        memory)


def check_ecs_stop_timeout(field: str, seconds: Any,
                           unresolved: Unresolved = never_unresolved) -> None:
    check_range(field, seconds, MIN_ECS_STOP_TIMEOUT, MAX_ECS_STOP_TIMEOUT,
                "seconds (Fargate rule)", unresolved)


def check_ec2_stop_timeout(field: str, seconds: Any,
                           unresolved: Unresolved = never_unresolved) -> None:
    """The warm shutdown plus slack must fit in the termination hook's heartbeat."""
    check_range(field, seconds, 1, MAX_HOOK_HEARTBEAT - TERMINATION_HOOK_SLACK,
                f"seconds (the termination hook waits stop_timeout + "
                f"{TERMINATION_HOOK_SLACK} s, at most {MAX_HOOK_HEARTBEAT} s)", unresolved)


MIN_NO_CONSUMER_MINUTES, MAX_NO_CONSUMER_MINUTES = 5, 1_440
MAX_RECEIVE_ERRORS = 100_000


def message_age_threshold(*, visibility_timeout: int, task_time_limit: int, max_countdown: int,
                          backoff_policy: Mapping[int, int]) -> int:
    """The oldest a healthy message gets, in seconds: held for its countdown, its
    backoff delays, one redelivery after a lost worker (it reappears at most the
    visibility timeout after the loss, with either transport), then its run (the task
    time limit). ApproximateAgeOfOldestMessage counts received,
    undeleted messages too, so all of these age the oldest message."""
    return max_countdown + sum(backoff_policy.values()) + visibility_timeout + task_time_limit


def check_message_age(field: str, seconds: Any, *, retention_period: Any,
                      unresolved: Unresolved = never_unresolved) -> None:
    if unresolved(seconds) or unresolved(retention_period):
        return
    check_range(field, seconds, 60, max(60, retention_period - 1),
                f"seconds (below retention_period {retention_period}, or the message expires "
                "before the alarm fires; set max_message_age)")


def check_alarms(prefix: str, *, no_consumer_minutes: Any, receive_errors: Any,
                 unresolved: Unresolved = never_unresolved) -> None:
    check_range(f"{prefix}no_consumer_minutes", no_consumer_minutes, MIN_NO_CONSUMER_MINUTES,
                MAX_NO_CONSUMER_MINUTES, "minutes", unresolved)
    check_range(f"{prefix}receive_errors", receive_errors, 0, MAX_RECEIVE_ERRORS,
                "errors per 5 minutes", unresolved)


_SAME_ACCOUNT_PRINCIPAL = re.compile(
    r"^arn:aws:iam::(?P<account>\d{12}):(user|role)/[A-Za-z0-9+=,.@_/-]{1,512}$")
TRUSTED_PRINCIPAL_RULE = ("must be an IAM user or role ARN of the stack's own account "
                          "(arn:aws:iam::ACCOUNT:user/NAME or arn:aws:iam::ACCOUNT:role/NAME); "
                          "an account root, a wildcard or another account's principal would "
                          "be trusted without an ExternalId")


def check_trusted_principal_arns(field: str, arns: Any) -> None:
    """Each ARN an IAM user or role named exactly (see the module docstring)."""
    for i, arn in enumerate(arns):
        if not (isinstance(arn, str) and _SAME_ACCOUNT_PRINCIPAL.match(arn)):
            raise SpecError(f"{field}[{i}]", TRUSTED_PRINCIPAL_RULE, arn)


def check_trusted_principals(field: str, arns: Any, *, account: Any,
                             unresolved: Callable[[Any], bool] = never_unresolved) -> None:
    """Each ARN a same-account IAM user or role. ``account`` is the stack's: unresolved
    (an environment-agnostic stack) it cannot be compared, so any ARN is refused then."""
    check_trusted_principal_arns(field, arns)
    for i, arn in enumerate(arns):
        if unresolved(account):
            raise SpecError(f"{field}[{i}]", TRUSTED_PRINCIPAL_RULE + "; the stack's account "
                            "must be known at synth (CDK_DEFAULT_ACCOUNT) to compare", arn)
        if arn.split(":")[4] != account:
            raise SpecError(f"{field}[{i}]", TRUSTED_PRINCIPAL_RULE + f"; the stack's account "
                            f"is {account}", arn)
