"""AWS's limits and formats that both sides check: the spec's rules (:mod:`infra.rules`)
at synth, and the worker configuration's loader (:mod:`runtime.config`) at worker start,
which refuses a hand-edited or truncated document the stack could not have written. One
place, so the two cannot disagree."""

from __future__ import annotations

import re

MAX_VISIBILITY_TIMEOUT = 43_200
"""SQS: a visibility timeout is 0..12 hours; so is a task's time limit and countdown here."""
MAX_COUNTDOWN = MAX_VISIBILITY_TIMEOUT
MAX_ETA_SECONDS = 30 * 86_400
"""The furthest ahead a task may be due on the bundled transport (30 days): a task due
later goes to its queue's DLQ with its reason instead of being parked for ever (each park
is a new message, so retention, the receive count and the age alarm never see it), and a
revocation lasts at least this long, so it outlives any task it can name."""
MAX_RETENTION = 1_209_600
"""SQS: a message is kept at most 14 days; a task with no ETA cannot run later than that
after its last send."""
MAX_WAIT_TIME = 20
VISIBILITY_MARGIN_SECONDS = 60
"""Slack between a task's hard time limit and its message becoming visible again (the
stock transport's rule, ``infra.rules``, and the renderer's warning share it)."""
"""SQS's long-poll range is 0..20 seconds."""
MIN_RECEIVE_COUNT, MAX_RECEIVE_COUNT = 1, 1_000
"""A redrive policy's maxReceiveCount."""
MIN_STS_SESSION, MAX_STS_SESSION = 900, 43_200
"""STS AssumeRole DurationSeconds."""
MIN_EXTERNAL_ID, MAX_EXTERNAL_ID = 2, 1_224
"""STS ExternalId length."""
MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE = 1_024, 1_048_576
"""A queue's MaximumMessageSize (bytes), SQS's range since 2025; MAX_MESSAGE_SIZE is also
SQS's limit on one message of any queue and on a batch's total payload."""
CLASSIC_MESSAGE_SIZE = 262_144
"""256 KiB, SQS's limit on a message until 2025: the spec's default for a queue's maximum
(``infra.settings`` says why), and what a worker document written before it carried
``max_message_bytes`` means (the limit the runtime applied to every queue then)."""
MIN_RESULT_TTL, MAX_RESULT_TTL = 60, 31_536_000
"""Result expiry: a minute to a year."""
MAX_QUEUE_NAME_LENGTH = 80
FIFO_SUFFIX = ".fifo"

QUEUE_NAME_BASE = re.compile(r"^[A-Za-z0-9_-]+$")
"""A queue name before any ``.fifo``: kombu rewrites ``.`` to ``-`` and other punctuation
to ``_`` before it looks a queue up in ``predefined_queues``, so nothing else matches."""
HTTP_URL = re.compile(r"^https?://[^\s/?#]+(/\S*)?$")
"""An endpoint or queue URL: a scheme botocore speaks, a host, an optional path."""
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
SQS_ARN = re.compile(r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]+$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$")
TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
"""DynamoDB's table names."""


def is_queue_name(name: str) -> bool:
    """Whether kombu finds ``name`` among its predefined queues, within SQS's 80 characters."""
    base = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    return len(name) <= MAX_QUEUE_NAME_LENGTH and bool(QUEUE_NAME_BASE.match(base))
