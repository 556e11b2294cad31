"""A Celery queue on SQS: the queue, its dead-letter queue, encryption and TLS-only policy."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aws_cdk import Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import rules
from runtime.errors import SpecError
from runtime.limits import CLASSIC_MESSAGE_SIZE, MAX_MESSAGE_SIZE
from runtime.schema import BUNDLED

CONSUME_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
"""What a worker needs to consume; GetQueueAttributes is how kombu reads the redrive policy."""

SEND_ACTIONS = ("sqs:SendMessage",)
CONSUME_KEY_ACTIONS = ("kms:Decrypt",)
SEND_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")


class CeleryQueue(Construct):
    """An SQS queue shaped for Celery, with its DLQ, validated before it exists.

    Props (keyword-only; every one but ``queue_name`` has a default):

    - ``queue_name``: the SQS and Celery queue name; FIFO names end in ``.fifo``.
    - ``fifo`` (default ``False``) and ``content_based_deduplication`` (``False``).
    - ``transport`` (default ``"bundled"``): what consumes the queue, ``"bundled"``
      (``runtime.transport``, whose heartbeat extends held messages) or ``"stock"``
      (kombu's own). The visibility timeout's default and rule follow it.
    - ``visibility_timeout``: 0..12 h. Bundled: default 60 s, at least 30 s (how long a
      killed worker's messages stay hidden), and ``task_time_limit`` plus the countdown
      a worker holds (up to 11 h, later ETAs are parked) at most 12 h less 60 s. Stock:
      default and minimum ``task_time_limit + max_countdown`` + 60 s.
    - ``receive_wait_time`` (default 20 s): long-poll wait, 0..20 s.
    - ``retention_period`` (default 4 days): 60 s..14 days, > visibility timeout.
    - ``max_message_size_bytes`` (default 262144, ``infra.settings`` says why):
      1024..1048576. The DLQ takes 1048576 whatever it is, so a message moved there
      with the kit's reason attributes fits.
    - ``dead_letter_queue`` (default ``True``), ``max_receive_count`` (default 5),
      ``dead_letter_retention_period`` (default 14 days, >= ``retention_period``).
    - ``backoff_policy`` (default none): kombu's ``{attempt: seconds}``; fewer steps
      than ``max_receive_count``.
    - ``task_time_limit`` (default 25 minutes) and ``max_countdown`` (default 0):
      what the visibility timeout must cover.
    - ``encryption_key`` (default: a new customer-managed key with rotation on).

    Every queue policy denies requests not made over TLS. The DLQ has the same
    type as the queue and a redrive-allow policy that admits only this queue.

    Attributes: ``queue``, ``dead_letter_queue`` (or ``None``), ``encryption_key``,
    ``queue_name``, ``max_receive_count``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue_name: str,
        fifo: bool = False,
        content_based_deduplication: bool = False,
        transport: str = BUNDLED,
        visibility_timeout: Duration | None = None,
        receive_wait_time: Duration = Duration.seconds(20),
        retention_period: Duration = Duration.days(4),
        max_message_size_bytes: int = CLASSIC_MESSAGE_SIZE,
        dead_letter_queue: bool = True,
        max_receive_count: int = 5,
        dead_letter_retention_period: Duration = Duration.days(14),
        backoff_policy: Mapping[int, int] = MappingProxyType({}),
        task_time_limit: Duration = Duration.minutes(25),
        max_countdown: Duration = Duration.seconds(0),
        encryption_key: kms.IKey | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        rules.check_transport("transport", transport)
        if visibility_timeout is None:
            visibility_timeout = _default_visibility(transport, task_time_limit, max_countdown)
        rules.check_queue(
            "",
            transport=transport,
            name=queue_name,
            fifo=fifo,
            visibility_timeout=visibility_timeout.to_seconds(),
            receive_wait_time=receive_wait_time.to_seconds(),
            retention_period=retention_period.to_seconds(),
            max_message_size_bytes=max_message_size_bytes,
            dead_letter_queue=dead_letter_queue,
            max_receive_count=max_receive_count,
            dead_letter_retention_period=dead_letter_retention_period.to_seconds(),
            backoff_policy=backoff_policy,
            task_time_limit=task_time_limit.to_seconds(),
            max_countdown=max_countdown.to_seconds(),
            unresolved=Token.is_unresolved,
            name_field="queue_name",
        )
        if content_based_deduplication and not fifo:
            raise SpecError("content_based_deduplication", "applies to FIFO queues only",
                                  True)
        super().__init__(scope, construct_id)
        self.queue_name = queue_name
        self.max_receive_count = max_receive_count
        self.encryption_key: kms.IKey = encryption_key or kms.Key(
            self, "Key", enable_key_rotation=True,
            description=f"Encrypts Celery queue {queue_name} and its dead-letter queue")

        fifo_props = ({"fifo": True, "content_based_deduplication": content_based_deduplication}
                      if fifo else {})
        self.dead_letter_queue: sqs.Queue | None = None
        redrive: sqs.DeadLetterQueue | None = None
        if dead_letter_queue:
            # The source ARN is built from its name, not referenced: a Ref would make
            # the queue and its DLQ depend on each other.
            source_arn = Stack.of(self).format_arn(service="sqs", resource=queue_name)
            self.dead_letter_queue = sqs.Queue(
                self, "DeadLetterQueue",
                queue_name=rules.dead_letter_queue_name(queue_name),
                retention_period=dead_letter_retention_period,
                max_message_size_bytes=MAX_MESSAGE_SIZE,
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=self.encryption_key,
                enforce_ssl=True,
                redrive_allow_policy=sqs.RedriveAllowPolicy(
                    redrive_permission=sqs.RedrivePermission.BY_QUEUE,
                    source_queues=[sqs.Queue.from_queue_arn(self, "Source", source_arn)],
                ),
                removal_policy=removal_policy,
                **fifo_props,
            )
            redrive = sqs.DeadLetterQueue(queue=self.dead_letter_queue,
                                          max_receive_count=max_receive_count)

        self.queue = sqs.Queue(
            self, "Queue",
            queue_name=queue_name,
            visibility_timeout=visibility_timeout,
            receive_message_wait_time=receive_wait_time,
            retention_period=retention_period,
            max_message_size_bytes=max_message_size_bytes,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.encryption_key,
            enforce_ssl=True,
            dead_letter_queue=redrive,
            removal_policy=removal_policy,
            **fifo_props,
        )

    def grant_consume(self, grantee: iam.IGrantable) -> iam.Grant:
        """Receive, delete, extend visibility and read attributes; decrypt. Plus
        SendMessage to the DLQ alone, so a worker can move a poison or rejected
        message there instead of losing it. Nothing else: no GetQueueUrl,
        ListQueues or CreateQueue (workers use predefined URLs)."""
        self.encryption_key.grant(grantee, *CONSUME_KEY_ACTIONS)
        if self.dead_letter_queue is not None:
            self.encryption_key.grant(grantee, *SEND_KEY_ACTIONS)
            iam.Grant.add_to_principal(grantee=grantee, actions=list(SEND_ACTIONS),
                                       resource_arns=[self.dead_letter_queue.queue_arn])
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(CONSUME_ACTIONS),
                                          resource_arns=[self.queue.queue_arn])

    def grant_send(self, grantee: iam.IGrantable) -> iam.Grant:
        """SendMessage, plus the data-key actions SQS needs for an encrypted queue."""
        self.encryption_key.grant(grantee, *SEND_KEY_ACTIONS)
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(SEND_ACTIONS),
                                          resource_arns=[self.queue.queue_arn])


def _default_visibility(transport: str, task_time_limit: Duration,
                        max_countdown: Duration) -> Duration:
    limits = (task_time_limit.to_seconds(), max_countdown.to_seconds())
    if transport != BUNDLED and any(Token.is_unresolved(v) for v in limits):
        # Stock's default is computed from the limits, which are not known until deploy.
        raise SpecError("visibility_timeout", "must be given with the stock transport when "
                        "task_time_limit or max_countdown is a deploy-time value", None)
    return Duration.seconds(rules.default_visibility_timeout(
        transport=transport, task_time_limit=limits[0], max_countdown=limits[1]))
