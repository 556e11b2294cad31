"""celery-sqs-kit's bundled kombu transport: stock ``kombu.transport.SQS``, with
what it gets wrong for production fixed by subclassing.

Select it with one line of Celery configuration (the renderer writes it unless
told ``--transport stock``)::

    broker_transport = "runtime.transport:Transport"

It is a drop-in: stock's options and modes work as stock's do (queues created on
declare or ``predefined_queues``, ``queue_name_prefix``, keys in the broker URL or
the default chain, ``region``, ``wait_time_seconds``, ``polling_interval``,
``visibility_timeout``, ``backoff_policy``/``backoff_tasks``, ``sts_role_arn``,
``sts_token_timeout``, ``fetch_message_attributes``, ``client-config``, SNS fanout,
``drain_events`` and ``basic_get`` as well as Celery's event loop), which
``tests/integration/test_drop_in.py`` checks scenario by scenario against stock.
What changes, and why:

Credentials
    Base credentials come from the default chain (ECS task role, instance
    profile), or from keys in the broker URL (with ``session_token`` when given),
    which work and are logged once as such: a role is preferred. With
    ``sts_role_arn`` (global) or ``predefined_queues[q]["sts_role_arn"]`` (per
    queue), the role is assumed through one botocore refreshable credential per
    role, shared by every client that uses it, assumed on its first request and
    refreshed before it expires; the session name is ``celery-<host>-<pid>``,
    ``sts_external_id`` is sent when set. A role whose AssumeRole failed is not
    asked for again before a backoff (1 s doubling to 60 s), and no lock is held
    across roles during a call to STS (``runtime.credentials``). Stock keeps one
    expiry for all queues (the others keep expired tokens after the first
    refresh), a fixed session name, and no ExternalId.

Request cost
    Receives ask for up to 10 messages, bounded by the prefetch window. Acks
    are DeleteMessageBatch calls of up to 10 receipts, sent when 10 wait or
    ``ack_flush_delay`` seconds (default ``0.1``) after the first, and on
    shutdown. Whether a queue has a DLQ is read from
    ``predefined_queues[q]["dead_letter_queue"]``, so no GetQueueAttributes call is
    made for it (the only one is the check before consuming, below). With
    predefined queues the transport makes no ListQueues, GetQueueUrl or CreateQueue
    call. Stock: one DeleteMessage per task, 2.1 to 3.0 requests
    per task. Receives, delete batches and visibility batches take a lean path
    (``runtime.sqs_wire``): botocore's serializer, signer, parser and standard
    retries over one kept-alive connection per thread, at under half the CPU of a
    boto3 call; every other call, and any client behind a proxy, is boto3's.

Receive loop
    Long polls run on one thread per queue with the boto3 client and hand
    results to Celery's event loop through a pipe (``runtime.receiver``). This
    removes stock's 100 ms hub stall after fast responses, and the need for
    pycurl. With ``polling_interval = 0`` an idle queue costs one receive per
    ``wait_time_seconds``: 180 requests an hour at 20 s (stock defaults: ~327).
    A queue receives again only when a batch's worth of prefetch slots is free
    (10, or half the prefetch window when that is smaller); until then it waits,
    parked, and acks and rejects resume it. Once any slot is free it waits at
    most ``receive_batch_wait`` seconds (default ``0.1``) for the rest. A busy
    queue keeps up to ``receives_in_flight`` (default 4) receives on the wire, and
    a fast worker's window grows past the prefetch count by what it runs in one
    receive round trip (at most the prefetch count again, and at most what the
    receives in flight can bring), so 5 to 20 ms a request
    does not idle its pool; slow tasks keep it at the prefetch count
    (``runtime.receive_window``). Messages being parked or dead-lettered (below)
    take room in the window too until the copy received is deleted, though they
    take no prefetch slot: a flood of far ETAs or poison messages slows receiving
    instead of piling up work for the lane. Consumers without Celery's event loop (gevent,
    eventlet, plain kombu ``drain_events``) receive on their own thread with the
    same holding, dead-lettering and acking; with every prefetch slot taken,
    ``drain_events`` waits for an ack (at most 1 s) instead of returning at once
    to be called again. FIFO receives carry a ``ReceiveRequestAttemptId``, so a
    receive that botocore retries after a lost response gets the same messages
    back instead of leaving them, and their group, hidden. ``fetch_message_attributes``
    works as stock's; the kit adds the system attributes ``ApproximateReceiveCount``,
    ``MessageGroupId`` and ``MessageDeduplicationId``, and asks for all message
    attributes when the option names none (stock asks for none), so DLQ moves keep them.

Visibility
    Each queue has a lane (``runtime.lane``): one thread that does the queue's
    background work in order (its delete batches settle on a few threads of their
    own, so a stalled delete holds up nothing). Every received message is held before
    any of its batch is delivered, and kept invisible with
    ChangeMessageVisibilityBatch by the queue's ``visibility_timeout``
    (``predefined_queues[q]["visibility_timeout"]``, default the
    ``visibility_timeout`` option) whenever half of it is left, up to SQS's
    12-hour cap (logged when reached), until its delete has landed, not only
    until its ack. The receive asks for that same visibility timeout, so the
    heartbeat's plan holds whatever the queue's own attribute says
    (``visibility_heartbeat``, default ``True``). The lane's passes take turns
    between extensions (first), releases, moves and deletes, a few calls of each,
    so no backlog of one holds up the others. Requeued messages, and those
    left unstarted at shutdown, are made visible at once (visibility 0), in
    batches, after any extension of them already on the wire; ``requeue()`` and
    ``reject(requeue=True)`` return once that release has been sent (at most 5 s),
    so the message is back when they return, as with stock. Backoff policies
    set their delay the same way. Stock: no extension, so long tasks run twice.

Far ETAs
    Celery keeps a countdown/ETA task in the worker until it is due (it sets no
    DelaySeconds), and SQS ends a message's invisibility 12 hours after its receipt:
    held longer, it would be delivered a second time. So a task received on a
    standard queue whose ETA (its ``eta`` header; a naive one is UTC) is more than
    ``eta_hold_limit`` seconds away (default and maximum 39600, 11 hours: the cap less
    an hour to run) is not delivered: it is *parked*, sent to its own queue again with
    its body and message attributes as received and DelaySeconds = what is beyond
    the limit (at most 900), and the copy received is deleted once that send has
    landed (it is held and extended until then, so it does not come back meanwhile).
    Parks go out in SendMessageBatch calls of up to 10, a few per lane pass, between
    the queue's extensions and acks. Each park is logged at INFO with the task's id,
    name and ETA. When it comes back within the limit it is delivered and held,
    extended, until it runs. One receipt is parked once; but a send whose answer was
    lost (a timeout or reset after SQS took it) is sent again, by botocore's retries
    or the lane's, and then the task is in the queue twice and runs twice: SQS's
    at-least-once, so ETA tasks, like all tasks, should be idempotent. Entries SQS
    reported sent are never sent again. Cost, while parked: a share of a
    SendMessageBatch, of a DeleteMessageBatch and of a receive every 15 minutes per
    task. Needs ``sqs:SendMessage`` on the queue (the kit's
    ``workers_send``); refused, the message is left for SQS to deliver again (and,
    after ``maxReceiveCount`` refusals, to the redrive policy's DLQ). Message
    attributes the receive did not ask for (``fetch_message_attributes`` naming some)
    are not carried over. FIFO queues take no per-message delay: publishing a FIFO
    task with an ETA beyond the limit raises :class:`runtime.errors.EtaTooFar`
    (naming the queue, the ETA and the limit) before any request. Stock: a task
    held past its visibility timeout is delivered again (and run twice).

    A task is parked for at most 30 days (``runtime.limits.MAX_ETA_SECONDS``): each park
    is a new message, so SQS's retention, the receive count and the oldest-message alarm
    never see it, and nothing else would end it. A task received due later than that
    goes to the DLQ (``kit_reason`` ``ETA too far: ...``, naming the ETA), on any queue,
    and publishing one raises :class:`~runtime.errors.EtaTooFar` before any request. A
    task whose ``expires`` header has passed is neither parked nor dead-lettered: it is
    delivered, and Celery discards it before it looks at its ETA, recording it REVOKED
    (expired) with its ``task_revoked`` signal and acking it, as it does with any
    expired task; a task that expires later is parked until then.

Poison and rejected messages
    A message that is not a kombu message is sent to the queue's DLQ with its body, its
    own message attributes and the attributes ``kit_reason`` (what was wrong, e.g.
    ``undecodable: not a kombu message (headers is an array, not an object)``) and
    ``kit_source_queue`` (FIFO: its group and deduplication ids), then deleted. Those two
    are always the kit's: any ``kit_`` attribute the message arrived with is dropped, and
    when it carries SQS's 10 attributes already, the kit's take the place of its last
    ones (what is dropped is logged). Moves go out batched, as parks do. Every
    field the transport or kombu reads before a consumer sees the message is checked
    (``runtime.poison`` lists them), and each message of a batch is sorted on its own: if
    the transport still fails on one, that one goes to the DLQ (``unreadable: ...``) and
    the rest of the batch is delivered. If kombu or the consumer raises on a message it
    has not acked or rejected (a strategy of Celery's on a task it cannot read, e.g. one
    without an ``id``), the error is logged with the message id, the message goes to the
    DLQ (``its consumer failed on it: ...``) and frees its prefetch slot, and the event
    loop never sees the error: stock lets it stop the worker (``Unrecoverable error``),
    and the message then stops every worker it comes to, up to ``maxReceiveCount``
    times. What Celery refuses itself (an unknown task, a refused content type) it
    rejects, which sends it to the DLQ as below; a body it cannot decode it logs and
    acks (``on_decode_error``), and that ack sends it to the DLQ too (``undecodable by
    its consumer: ...``), where stock deletes it. A task rejected without requeue
    (``Reject(requeue=False)``) goes to the DLQ the same way, at once and without
    running again. Without a DLQ in the options both are left for SQS to deliver
    again (and for the queue's redrive policy, if it has one), and logged;
    never deleted. Stock: poison messages are acked and lost; rejected ones are
    deleted unless the queue has a redrive policy. ``basic_get(no_ack=True)``
    deletes the message it returns (stock leaves it in flight, to come back).

Errors
    Nothing in the background is dropped on a failure that may pass: work whose
    call failed on throttling, 5xx, the network or credentials (including
    botocore refusing to sign while STS is down) is kept and retried with a
    jittered backoff per queue and kind of work, each failure logged; a queue
    failing delays only its own lane, and the event loop never sees these
    errors. A final answer (access denied, a stale receipt handle) is logged with
    the queue and code, and SQS delivers the message again. Receives back off
    with jitter (0.5 s doubling to ``receive_max_backoff``, 60 s). Access denied,
    missing queue and expired or unobtainable credentials become
    :class:`runtime.errors.QueueAccessDenied`, :class:`~runtime.errors.QueueNotFound`
    and :class:`~runtime.errors.CredentialsError`, naming the queue, the action
    and what to check. Publishing raises them, and
    :class:`~runtime.errors.MessageTooLarge` (naming the size and the limit, before any
    request) for a message larger than its queue's ``max_message_bytes`` (the queue's
    MaximumMessageSize, which the renderer writes; else the option, default SQS's
    1 MiB, and SQS holds it to the queue's own limit); once consuming has started (see
    below for the check before), the receive loop logs them and keeps retrying, so
    a policy fixed meanwhile needs no worker restart. Clients: receives
    wait out the long poll (read timeout ``wait_time_seconds`` + 15 s, 6 attempts);
    publishes are bounded (2 s connect, 5 s read, 4 attempts: the one retry policy
    of a publish, ``runtime.publishing``), and any other failure of theirs raises
    :class:`~runtime.errors.PublishError` naming the task; other calls fail a dead
    connection in seconds (5 s connect, 10 s read, 3 attempts), and the lane retries.

Bad configuration fails at start
    Before it consumes a queue, a channel asks SQS for the queue's ARN (one
    GetQueueAttributes, granted to the kit's worker roles; none when the queue was
    declared, whose size stock already read) through that ``ops`` client
    (``runtime.queue_check``). A URL with no queue, the wrong region, access denied,
    bad credentials or an endpoint that does not answer raise
    :class:`~runtime.errors.QueueNotFound`, :class:`~runtime.errors.QueueAccessDenied`,
    :class:`~runtime.errors.CredentialsError` or
    :class:`~runtime.errors.EndpointUnreachable`, logged once (CRITICAL) with the
    queue, its URL and what to check. None is among the transport's connection or
    channel errors, so ``celery worker`` does not reconnect: it exits with status 1,
    before it reports ready, in about a second when the endpoint answers or
    refuses, in under 20 s when packets are dropped (three 5 s connects), in about
    33 s when it accepts but never answers (three 10 s reads). Throttling, 5xx and
    a connection closed mid-request say nothing about the configuration: they are
    asked about again (0.5 s doubling to 8 s) for up to 30 s before they count. A
    consumer that restarts (rare: receive errors never reach Celery) checks again
    on its new channel. Failures after the check stay recoverable, as above. Stock, with the
    predefined, undeclared queues the kit renders: a missing queue stops the worker
    after it reported ready, on its first receive, with an HTTP 400 that names
    neither queue nor URL; an unreachable endpoint logs an ``AttributeError`` once,
    then the worker receives nothing and says nothing.

Shutdown
    ``close()`` stops receiving, gives back what was received and not started,
    then, per queue and all queues at once, sends the pending acks first (a lost
    ack runs a task again), then moves (DLQ moves and parks, each batch followed by
    its delete), then releases, through a single-attempt client with short
    timeouts (2 s connect, 5 s read), within ``shutdown_timeout`` seconds (default
    ``10``, checked before each call) after Celery's own warm shutdown has let the
    running tasks finish. A lane's own thread stops first: its pass on the wire
    ends after its current call, and the shutdown waits for it, so a release is
    never undone by an extension still on the wire and nothing of the lane's runs
    after ``close()`` returns (but a request already on the wire at the deadline).
    What is left at the deadline is logged and left to SQS's visibility timeout.
    A receive that returns after shutdown began is given back at once.

Options (``broker_transport_options``), with defaults:
``ack_flush_delay=0.1``, ``receive_batch_wait=0.1``, ``visibility_heartbeat=True``,
``eta_hold_limit=39600`` (0..39600; checked when the channel opens, ``ConfigError``),
``shutdown_timeout=10``, ``sts_external_id=None``, ``receive_max_backoff=60``,
``session_token=None``, ``max_message_bytes=1048576``; per predefined queue:
``dead_letter_queue`` (URL), ``visibility_timeout``, ``sts_role_arn``,
``max_message_bytes`` (the queue's MaximumMessageSize; the renderer writes it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from datetime import datetime, timezone
from queue import Empty
from functools import cached_property
from typing import Any

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from kombu.transport import SQS, virtual
from kombu.transport.SQS.exceptions import UndefinedQueueException
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from vine import promise

from runtime import events, publishing
from runtime.credentials import RoleCredentials
from runtime.lane import QueueLane, close_lanes
from runtime.limits import MAX_ETA_SECONDS
from runtime.poison import POISON, envelope_defect
from runtime.queue_check import check_queue
from runtime.receive_window import ReceiveWindow
from runtime.receiver import Receiver
from runtime.errors import ConfigError, EtaTooFar, MessageTooLarge, TransportError
from runtime.sqs_errors import error_code, typed_error
from runtime.limits import MAX_MESSAGE_SIZE
from runtime.visibility import MAX_ETA_HOLD_LIMIT, eta_of, park_delay, time_header

logger = logging.getLogger(__name__)

KIT_SYSTEM_ATTRIBUTES = ("ApproximateReceiveCount", "MessageGroupId", "MessageDeduplicationId")
"""Received with every message: the backoff policy reads the first, DLQ moves keep the others."""
BANNER = "celery-sqs-kit bundled transport"
"""Starts the line the transport logs when a connection opens its first channel."""
REMOTE_CONTROL = (
    "remote control (celery inspect, ping, status, control, events, Flower) needs "
    "broadcast, which SQS does not have: check a worker with `python -m runtime.health` "
    "(its container's health check), queues with `python -m runtime.ops status`, and "
    "revoke with AsyncResult.revoke()")
REQUEUE_WAIT = 5.0
"""Seconds ``requeue()`` waits at most for its message's release to be sent."""
REJECTED = "rejected without requeue"
UNREADABLE = "unreadable: the transport failed on it"
CONSUMER_FAILED = "its consumer failed on it"
UNDECODABLE = "undecodable by its consumer"
TOO_FAR = "ETA too far"
"""Each starts the ``kit_reason`` of a DLQ move (``runtime.poison.POISON`` too)."""


class QoS(SQS.QoS):
    """Stock QoS that tells its channel when acks and rejects free prefetch slots, and
    applies backoff policies through the message's lane."""

    def unacked(self) -> int:
        """Slots taken: messages delivered and neither acked nor rejected yet, and
        messages the lanes are moving (parked, dead-lettered) whose copy is not deleted
        yet. Those were never delivered, but a flood of them must slow receiving as
        running tasks do, or the lanes' work piles up (the receive window may let this
        pass ``prefetch_count`` by a round trip's worth)."""
        return len(self._delivered) - len(self._dirty) + self.channel.moves_pending()

    def can_consume(self) -> bool:
        return not self.prefetch_count or self.unacked() < self.prefetch_count

    def can_consume_max_estimate(self) -> int | None:
        return max(self.prefetch_count - self.unacked(), 0) if self.prefetch_count else None

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self.channel.slots_freed()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)
        self.channel.slots_freed()

    def withdraw(self, delivery_tag: str) -> bool:
        """Forget a delivery whose consumer failed on it before it acked or rejected it
        (``True``), so no prefetch slot stays taken and shutdown does not give it back;
        ``False`` when the consumer did settle it, and that outcome stands."""
        if delivery_tag in self._dirty:
            return False
        self._delivered.pop(delivery_tag, None)
        self.channel.slots_freed()
        return True

    def apply_backoff_policy(self, routing_key: str, delivery_tag: str,
                             backoff_policy: dict[int, int], backoff_tasks: list[str]) -> None:
        task_name, retries = self.extract_task_name_and_number_of_retries(delivery_tag)
        delay = backoff_policy.get(retries) if task_name in backoff_tasks else None
        if delay is not None:
            url = self._delivered[delivery_tag].delivery_info["sqs_queue"]
            self.channel.lane(url).change_visibility([delivery_tag], delay)


class Message(virtual.Message):
    """kombu's message, which remembers why its body could not be decoded: Celery logs
    such a message and acks it (``on_decode_error``), and the channel then sends it to
    the DLQ instead of deleting it."""

    undecodable = ""

    def decode(self) -> Any:
        try:
            return super().decode()
        except Exception as error:  # what kombu's deserializers raise on a sender's bytes
            self.undecodable = repr(error)
            raise


class Channel(SQS.Channel):
    """Stock SQS channel with the kit's credentials, lanes, receive loop and shutdown."""

    QoS = QoS
    Message = Message

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._closing = False
        self._lanes: dict[str, QueueLane] = {}
        self._lanes_lock = threading.Lock()
        self._receive_failures: dict[str, int] = {}
        self.receive_failing_since: float | None = None
        """``time.monotonic()`` of the first of the failures since the last receive that
        completed (``None`` while receives complete); ``runtime.liveness`` reports it."""
        self.last_receive_error = ""
        self._receiver: Receiver | None = None
        self._checked: set[str] = set()  # URLs of queues SQS has answered for
        self._slot_freed = threading.Event()
        super().__init__(*args, **kwargs)  # lists queues, for queues not predefined
        # Read now: kombu clears channel.connection during close(), before the final
        # acks and releases are sent, and these all go through it.
        for option in ("_credentials", "queue_name_prefix", "visibility_timeout",
                       "wait_time_seconds", "region", "_receive_attributes", "eta_hold_limit"):
            getattr(self, option)

    # options, each with its default in one place ---------------------------------
    @cached_property
    def transport_options(self) -> dict[str, Any]:
        return self.connection.client.transport_options

    @cached_property
    def ack_flush_delay(self) -> float:
        return float(self.transport_options.get("ack_flush_delay", 0.1))

    @cached_property
    def visibility_heartbeat(self) -> bool:
        return bool(self.transport_options.get("visibility_heartbeat", True))

    @cached_property
    def receive_batch_wait(self) -> float:
        return float(self.transport_options.get("receive_batch_wait", 0.1))

    @cached_property
    def receives_in_flight(self) -> int:
        return int(self.transport_options.get("receives_in_flight", 4))

    @cached_property
    def receive_max_backoff(self) -> float:
        return float(self.transport_options.get("receive_max_backoff", 60))

    @cached_property
    def max_message_bytes(self) -> int:
        """The largest message of a queue whose predefined entry names none."""
        return int(self.transport_options.get("max_message_bytes", MAX_MESSAGE_SIZE))

    @cached_property
    def eta_hold_limit(self) -> int:
        """Seconds: a task whose ETA is further away is parked, not held (read, and so
        checked, when the channel opens)."""
        value = self.transport_options.get("eta_hold_limit", MAX_ETA_HOLD_LIMIT)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value <= MAX_ETA_HOLD_LIMIT:
            raise ConfigError("broker_transport_options", "eta_hold_limit",
                              f"must be 0..{MAX_ETA_HOLD_LIMIT} seconds (SQS's 12-hour cap "
                              f"less an hour to run the task), got {value!r}")
        return int(value)

    @cached_property
    def shutdown_timeout(self) -> float:
        return float(self.transport_options.get("shutdown_timeout", 10))

    @cached_property
    def _receive_attributes(self) -> dict[str, list[str]]:
        """Stock's ``fetch_message_attributes`` handling, plus what the kit needs."""
        wanted = self.get_message_attributes
        system = wanted["MessageSystemAttributeNames"]
        if "ALL" not in (name.upper() for name in system):
            system = sorted(set(system) | set(KIT_SYSTEM_ATTRIBUTES))
        return {"MessageSystemAttributeNames": system,
                # stock asks for none by default; the kit asks for all, so DLQ moves keep them
                "MessageAttributeNames": wanted["MessageAttributeNames"] or ["All"]}

    def _queue_option(self, queue: str | None, key: str, default: Any = None) -> Any:
        return (self.predefined_queues.get(queue) or {}).get(key, default) if queue else default

    def _visibility_timeout_of(self, queue: str | None) -> int:
        return int(self._queue_option(queue, "visibility_timeout", self.visibility_timeout))

    def _max_message_bytes_of(self, queue: str) -> int:
        return int(self._queue_option(queue, "max_message_bytes", self.max_message_bytes))

    # clients -----------------------------------------------------------------------
    @cached_property
    def _credentials(self) -> RoleCredentials:
        return self.connection.credentials_for(self)

    def sqs(self, queue: str | None = None, profile: str = "ops") -> BaseClient:
        captured = getattr(self._capture, "client", None)
        if captured is not None:  # a batched publish is building its request
            return captured
        role = self._queue_option(queue, "sts_role_arn") or \
            self.transport_options.get("sts_role_arn")
        return self._credentials.client("sqs", role, profile)

    @cached_property
    def _capture(self) -> threading.local:
        return threading.local()

    def lane(self, url: str, queue: str | None = None) -> QueueLane:
        """The lane doing this queue's background work (made on first use)."""
        lane = self._lanes.get(url)
        if lane is not None:
            return lane
        with self._lanes_lock:
            lane = self._lanes.get(url)
            if lane is None:
                name = queue or self._queue_name_of(url)
                lane = self._lanes[url] = QueueLane(
                    queue=name, url=url, visibility_timeout=self._visibility_timeout_of(name),
                    client=lambda profile: self.sqs(name, profile),
                    dead_letter_url=self._queue_option(name, "dead_letter_queue"),
                    flush_delay=self.ack_flush_delay, heartbeat=self.visibility_heartbeat,
                    on_room=self._moves_settled)
            return lane

    def _moves_settled(self) -> None:
        """A lane's moves settled (any thread): their room in the window is free."""
        if not self._closing:
            self.slots_freed()

    def moves_pending(self) -> int:
        """Messages the lanes are parking or dead-lettering, not deleted yet."""
        return sum(lane.moves_pending for lane in list(self._lanes.values()))

    def _resolve_queue_url(self, queue: str) -> str:
        try:
            return super()._resolve_queue_url(queue)
        except UndefinedQueueException:
            if is_remote_control(self.canonical_queue_name(queue)):
                raise UndefinedQueueException(
                    f"queue {queue!r} is Celery's remote control; {REMOTE_CONTROL}") from None
            raise

    # consuming starts -------------------------------------------------------------------
    def queue_declare(self, queue: str | None = None, passive: bool = False,
                      **kwargs: Any) -> Any:
        declared = super().queue_declare(queue, passive=passive, **kwargs)
        self._checked.add(self._new_queue(declared.queue))  # stock read its size: it answers
        return declared

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        url = self._new_queue(queue)
        if url not in self._checked:
            name = self.canonical_queue_name(queue)
            try:
                check_queue(self.sqs(name), name, url)
            except TransportError as error:  # Celery stops the worker: none is a connection error
                logger.critical("%s; not consuming, the worker stops", error)
                raise
            self._checked.add(url)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _queue_name_of(self, url: str) -> str | None:
        return next((name for name, known in self._queue_cache.items() if known == url), None)

    # receive -----------------------------------------------------------------------
    @property
    def receiver(self) -> Receiver:
        if self._receiver is None:
            self._receiver = Receiver(self.hub)
        return self._receiver

    @cached_property
    def receive_window(self) -> ReceiveWindow:
        return ReceiveWindow(self.qos, self.hub, receive=self._receive_now,
                             wake=lambda callback: self.receiver.call_soon(callback),
                             batch_wait=self.receive_batch_wait,
                             max_in_flight=self.receives_in_flight)

    def slots_freed(self) -> None:
        """An ack, a reject or a wider window freed prefetch slots (any thread)."""
        self._slot_freed.set()
        if self.hub is not None:
            self.receive_window.slots_freed()

    def _schedule_queue(self, queue: str) -> None:
        if queue in self._active_queues:
            self.receive_window.schedule(queue)

    def _receive_now(self, queue: str, count: int) -> None:
        self._get_async(queue, count, callback=promise(self._loop1, (queue,)))

    def basic_qos(self, *args: Any, **kwargs: Any) -> None:
        super().basic_qos(*args, **kwargs)  # Celery widens the window for ETA tasks
        self.slots_freed()

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        took = [0.0]  # the request's own duration, for the window's round trip

        def receive() -> list[dict[str, Any]]:
            started = time.monotonic()
            try:
                return self._receive(qname, q_url, count)
            finally:
                took[0] = time.monotonic() - started
        self.receiver.submit(
            qname, receive,
            lambda result: self._on_received(queue, qname, q_url, count, result, callback,
                                             took[0]),
            lambda result: self._give_back(q_url, qname, result))
        return callback

    def _receive(self, qname: str, q_url: str, count: int) -> list[dict[str, Any]]:
        """One ReceiveMessage (a long poll), on the calling thread."""
        kwargs: dict[str, Any] = {"QueueUrl": q_url, "MaxNumberOfMessages": count,
                                  "WaitTimeSeconds": self.wait_time_seconds,
                                  **self._receive_attributes}
        if self.visibility_heartbeat:  # the window the heartbeat plans with, not the queue's
            kwargs["VisibilityTimeout"] = self._visibility_timeout_of(qname)
        if q_url.endswith(".fifo"):
            # botocore's retries of this receive reuse the id, so SQS answers a retry with
            # the same messages instead of leaving them (and their group) hidden.
            kwargs["ReceiveRequestAttemptId"] = uuid.uuid4().hex
        return self.sqs(qname, "receive").receive_message(**kwargs).get("Messages", [])

    def _give_back(self, q_url: str, qname: str, result: Any) -> None:
        """Make received messages visible again at once, undelivered."""
        if isinstance(result, list) and result:
            self.lane(q_url, qname).release([m["ReceiptHandle"] for m in result])

    def _on_received(self, queue: str, qname: str, q_url: str, asked: int, result: Any,
                     callback: Any, took: float = 0.0) -> None:
        got = 0 if isinstance(result, BaseException) else len(result)
        self.receive_window.received(queue, asked, got, took)
        if isinstance(result, BaseException):
            self._on_receive_error(qname, result, callback)
            return
        self._receive_failures.pop(qname, None)
        self.receive_failing_since = None
        deliver = None if self._closing else self.connection._callbacks.get(queue)
        if deliver is None:
            self._give_back(q_url, qname, result)
            accepted = []
        else:
            accepted = self._accept(queue, qname, q_url, result)
            for payload in accepted:
                self._deliver_one(deliver, payload)
        if callback is not None and not self._closing:
            callback(len(accepted) or len(result))

    def _accept(self, queue: str, qname: str, q_url: str,
                messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Kombu payloads for a received batch: poison messages go to the DLQ, tasks whose
        ETA is too far away to hold are parked (beyond ``MAX_ETA_SECONDS``, sent to the
        DLQ), and the rest of the batch is held (or, for no-ack consumers, acked) before
        any is delivered. Each message is sorted on its own: whatever fails on one sends
        that one to the DLQ and touches no other."""
        lane = self.lane(q_url, qname)
        payloads = []
        now = datetime.now(timezone.utc)
        for message in messages:
            try:
                payload = self._sort(message, lane, qname, q_url, now)
            except Exception as error:  # a message's shape must never stop the worker
                logger.exception("message %s of queue %r: the transport failed on it; to "
                                 "the DLQ", message.get("MessageId"), qname)
                lane.dead_letter(message, f"{UNREADABLE}: {error!r}")
                continue
            if payload is not None:
                payloads.append(payload)
        handles = [p["properties"]["delivery_tag"] for p in payloads]
        if queue in self._noack_queues:
            for handle in handles:
                lane.ack(handle)
        else:
            lane.hold(handles)
        return payloads

    def _sort(self, message: dict[str, Any], lane: QueueLane, qname: str, q_url: str,
              now: datetime) -> dict[str, Any] | None:
        """The payload of a message to deliver, or ``None`` once it is sent to the DLQ or
        parked."""
        payload, defect = self._decode(message)
        if payload is None:
            lane.dead_letter(message, defect)
            return None
        headers = payload["headers"]
        eta = eta_of(headers)
        expires = time_header(headers, "expires")
        if eta is not None and expires is not None and expires <= now:
            # Celery discards an expired task before it looks at its ETA, and records it
            # as REVOKED (expired) with its signal: parking it would only keep it longer.
            logger.info("task %s (%s) of queue %r expired at %s: delivered, for Celery to "
                        "revoke, instead of waiting for its ETA", headers.get("id"),
                        headers.get("task"), qname, expires.isoformat())
        elif eta is not None and (beyond := too_far(eta, now)):
            lane.dead_letter(message, f"{TOO_FAR}: {beyond}")
            return None
        # FIFO queues take no per-message delay: _put refuses their far ETAs instead.
        elif not q_url.endswith(".fifo") and (delay := park_delay(eta, now,
                                                                   self.eta_hold_limit)):
            logger.info("task %s (%s) of queue %r is due at %s, %.0f s away, beyond "
                        "eta_hold_limit (%d s): sent to the queue again, delayed %d s, and "
                        "this copy deleted", headers.get("id"), headers.get("task"), qname,
                        eta.isoformat(), (eta - now).total_seconds(), self.eta_hold_limit,
                        delay)
            lane.park(message, delay)
            return None
        return self._envelope_payload(payload, payload.get("body"), message, q_url)

    def _on_receive_error(self, qname: str, error: BaseException, callback: Any) -> None:
        failures = self._receive_failures[qname] = self._receive_failures.get(qname, 0) + 1
        typed = typed_error(error, queue=qname, action="ReceiveMessage") \
            if isinstance(error, ClientError) else None
        delay = min(self.receive_max_backoff, 0.5 * 2 ** (failures - 1)) * random.uniform(0.5, 1)
        self.last_receive_error = str(typed or f"ReceiveMessage on queue {qname!r} failed: "
                                               f"{error!r}")
        events.tell(events.ReceiveFailed(qname, type(typed).__name__ if typed is not None
                                         else error_code(error)))
        if self.receive_failing_since is None:
            self.receive_failing_since = time.monotonic()
        logger.error("%s; polling again in %.1f s", self.last_receive_error, delay)
        if callback is not None and not self._closing:
            self.hub.call_later(delay, callback, 0)

    def _decode(self, message: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The kombu payload, or ``None`` and why no consumer can use this message
        (``runtime.poison``: every field the transport and kombu read is checked)."""
        body = message.get("Body")
        if not isinstance(body, (str, bytes)):
            return None, f"{POISON} (no body)"
        try:
            text = bytes_to_str(self._decode_python_message_body(body))
        except UnicodeDecodeError:
            return None, f"{POISON} (the body is not UTF-8 text)"
        try:
            payload = loads(text)  # kombu's JSON, with its encoded types, as stock reads it
        except Exception as error:  # its type decoders raise what the sender provokes
            return None, f"{POISON} (the body is not JSON: {error})"
        defect = envelope_defect(payload)
        return (None, defect) if defect else (payload, "")

    def _deliver_one(self, deliver: Any, payload: dict[str, Any]) -> None:
        """Hand one payload to its consumer. If kombu or the consumer fails on it (a
        strategy of Celery's raising on a task it cannot read) before acking or rejecting
        it, it goes to the DLQ, logged with its message id; the failure never reaches the
        event loop, which would stop the worker, and then the next worker it comes to."""
        tag = payload["properties"]["delivery_tag"]
        info = payload["properties"]["delivery_info"]
        message, url = info["sqs_message"], info["sqs_queue"]
        try:
            deliver(payload)
        except Exception as error:  # the consumer's failure is this message's alone
            settled = not self.qos.withdraw(tag)
            logger.exception("message %s of queue %r: its consumer failed on it%s",
                             message.get("MessageId"), self._queue_name_of(url),
                             " after settling it" if settled else "; to the DLQ")
            if not settled:
                self.lane(url).dead_letter(message, f"{CONSUMER_FAILED}: {error!r}")

    # consumers without Celery's event loop (drain_events, basic_get) ----------------------
    def drain_events(self, timeout: float | None = None, callback: Any = None,
                     **kwargs: Any) -> None:
        if self._consumers and not self.qos.can_consume():
            # Stock raises Empty at once and the caller polls again after
            # polling_interval: with 0, a full window spins. Wait for an ack instead.
            self._slot_freed.clear()
            if not self.qos.can_consume():
                self._slot_freed.wait(1.0 if timeout is None else min(timeout, 1.0))
        return super().drain_events(timeout=timeout, callback=callback, **kwargs)

    def _get_bulk(self, queue: str, max_if_unlimited: Any = SQS.SQS_MAX_MESSAGES,
                  callback: Any = None) -> None:
        payloads = self._receive_and_accept(queue, self._get_message_estimate())
        if not payloads:
            raise Empty()
        for payload in payloads:
            self._deliver_one(lambda p: self.connection._deliver(p, queue), payload)

    def _get(self, queue: str) -> dict[str, Any]:
        payloads = self._receive_and_accept(queue, 1)
        if not payloads:
            raise Empty()
        return payloads[0]

    def _receive_and_accept(self, queue: str, count: int) -> list[dict[str, Any]]:
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        return self._accept(queue, qname, q_url, self._receive(qname, q_url, count))

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:  # nobody will ack it: delete it now
            self.lane(message.delivery_info["sqs_queue"]).ack(message.delivery_tag)
        return message

    # acknowledgements ----------------------------------------------------------------
    def _sqs_delivery(self, delivery_tag: str) -> tuple[str, dict[str, Any]] | None:
        """(queue URL, SQS message) of a delivery, if it came from SQS."""
        try:
            info = self.qos.get(delivery_tag).delivery_info
            return info["sqs_queue"], info["sqs_message"]
        except KeyError:
            return None

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        delivery = self._sqs_delivery(delivery_tag)
        if delivery is not None:
            undecodable = getattr(self.qos.get(delivery_tag), "undecodable", "")
            if undecodable:  # acked by a consumer that could not decode it: not lost
                self.lane(delivery[0]).dead_letter(delivery[1],
                                                   f"{UNDECODABLE}: {undecodable}")
            else:
                self.lane(delivery[0]).ack(delivery_tag)
        return virtual.Channel.basic_ack(self, delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        delivery = self._sqs_delivery(delivery_tag)
        if delivery is not None and not requeue:
            url, message = delivery
            if self.qos.is_backoff_task(delivery_tag):
                self.lane(url).forget(delivery_tag)  # its backoff policy sets its visibility
            else:
                self.lane(url).dead_letter(message, REJECTED)
        # Not stock's basic_reject: it deletes rejected messages of queues without a DLQ.
        return virtual.Channel.basic_reject(self, delivery_tag, requeue=requeue)

    def _restore(self, message: Any, unwanted_delivery_info: tuple[str, ...] = (
            "sqs_message", "sqs_queue")) -> None:
        info = message.delivery_info
        sqs_message, q_url = info.get("sqs_message"), info.get("sqs_queue")
        if sqs_message is None or q_url is None:
            return super()._restore(message, unwanted_delivery_info)
        # Visible again when requeue() returns, as with stock (sent by the lane, after
        # any extension of it on the wire); at shutdown, sent after the acks instead.
        self.lane(q_url).release([sqs_message["ReceiptHandle"]], wait=REQUEUE_WAIT)

    # publishing ------------------------------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        properties = message.get("properties")
        check_eta(queue, headers, self.eta_hold_limit)
        if queue.endswith(".fifo") and isinstance(properties, dict) and headers.get("id") \
                and "MessageDeduplicationId" not in properties:
            # Stock makes up a random id, so a publisher that retries after a lost answer
            # queues the task twice. The task id and its retry count name this publish:
            # a retry of the same publish is dropped by SQS, task.retry() is not.
            properties["MessageDeduplicationId"] = f"{headers['id']}:{headers.get('retries', 0)}"
        if message.get("redelivered"):  # stock's restore of a message not from SQS
            return super()._put(queue, message, **kwargs)
        task_id = str(headers.get("id") or "?")
        try:
            request = self._send_request(queue, message, **kwargs)
            name = self.canonical_queue_name(queue)
            check_size(request, queue, self._max_message_bytes_of(name))
            client = self.sqs(name, "publish")
            batch = publishing.current()
            if batch is not None:
                batch.add(client, request, task_id)
            else:
                client.send_message(**request)
        except Exception as error:  # the publish retry policy's verdict (runtime.publishing)
            raised = publishing.publish_error(error, queue=queue, task_id=task_id)
            if raised is error:
                raise
            raise raised from None
        return None

    def _send_request(self, queue: str, message: dict[str, Any], **kwargs: Any
                      ) -> dict[str, Any]:
        """The SendMessage arguments stock's ``_put`` builds for this message (FIFO group
        and deduplication ids, delay, attributes, body encoding), without sending it."""
        self._new_queue(queue)  # resolved (or created) with the real client first
        captured = _CapturedSend()
        self._capture.client = captured
        try:
            super()._put(queue, message, **kwargs)
        finally:
            self._capture.client = None
        return captured.request

    # shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop receiving, give back what was received and not started, then send the
        last acks before the releases; the lanes' part takes at most ``shutdown_timeout``."""
        if self._closing:
            return
        self._closing = True
        for lane in list(self._lanes.values()):
            lane.begin_close()  # what shutdown brings is sent by close_lanes, acks first
        steps = [
            *([self._receiver.close] if self._receiver is not None else []),
            super().close,  # cancels consumers; unacked messages come back via _restore
            lambda: close_lanes(list(self._lanes.values()), self.shutdown_timeout),
        ]
        for step in steps:
            try:
                step()
            except Exception:  # every step must run: a failed release must not cost an ack
                logger.exception("closing the SQS channel: a step failed")


def is_remote_control(sqs_name: str) -> bool:
    """A queue of Celery's remote control (``*.pidbox``) or events (``celeryev.*``), as
    kombu names it for SQS (dots become dashes)."""
    return sqs_name.endswith("-pidbox") or sqs_name.startswith("celeryev")


class _CapturedSend:
    """Stands in for the SQS client while stock's ``_put`` builds a SendMessage."""

    request: dict[str, Any]

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.request = kwargs
        return {}


def check_size(request: dict[str, Any], queue: str, limit: int) -> None:
    """Refuse a message over SQS's limit before any request: SQS would refuse it anyway,
    after the round trip, and some clients truncate silently."""
    size = publishing.payload_size(request)
    if size > limit:
        raise MessageTooLarge(queue, "SendMessage", "MessageTooLarge",
                              f"{size} bytes, the queue's limit is {limit} bytes")


def too_far(eta: datetime, now: datetime) -> str | None:
    """Why a task due at ``eta`` is further away than the transport keeps a task
    (``MAX_ETA_SECONDS``), or ``None``."""
    away = (eta - now).total_seconds()
    if away <= MAX_ETA_SECONDS:
        return None
    return (f"ETA {eta.isoformat()} is {away:.0f} s away, beyond the maximum of "
            f"{MAX_ETA_SECONDS} s ({MAX_ETA_SECONDS // 86_400} days)")


def check_eta(queue: str, headers: dict[str, Any], limit: int) -> None:
    """Refuse, before any request, a task whose ETA no worker would wait for: beyond
    ``MAX_ETA_SECONDS`` (a worker would send it to the DLQ), or, on a FIFO queue, beyond
    ``limit``: no worker could hold it until it is due (SQS's 12-hour cap) and a FIFO
    message cannot be parked (no per-message DelaySeconds), so it would run twice or
    never."""
    eta, now = eta_of(headers), datetime.now(timezone.utc)
    if eta is None:
        return
    beyond = too_far(eta, now)
    if beyond is not None:
        raise EtaTooFar(queue, "SendMessage", "EtaTooFar", beyond,
                        hint=EtaTooFar.beyond_maximum_hint)
    if queue.endswith(".fifo") and park_delay(eta, now, limit):
        raise EtaTooFar(queue, "SendMessage", "EtaTooFar",
                        f"ETA {eta.isoformat()} is {(eta - now).total_seconds():.0f} s away, "
                        f"eta_hold_limit is {limit} s")


class Transport(SQS.Transport):
    """The bundled transport: ``broker_transport = "runtime.transport:Transport"``."""

    Channel = Channel
    polling_interval = 0

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._credentials: RoleCredentials | None = None

    def credentials_for(self, channel: Channel) -> RoleCredentials:
        """One set of clients and role refreshers per connection, shared by its channels."""
        if self._credentials is None:
            options = channel.transport_options
            user = Config(**options["client-config"]) if options.get("client-config") else None
            logger.info("%s: region %s, %d predefined queue(s), heartbeat %s", BANNER,
                        channel.region, len(channel.predefined_queues),
                        "on" if channel.visibility_heartbeat else "off")
            self._credentials = RoleCredentials(
                region=channel.region, configs=client_configs(channel.wait_time_seconds, user),
                token_timeout=int(options.get("sts_token_timeout", 900)),
                external_id=options.get("sts_external_id"), endpoint_url=channel.endpoint_url,
                base_session=self._base_session(options))
        return self._credentials

    def _base_session(self, options: dict[str, Any]) -> botocore.session.Session:
        """The default chain, or, as stock does, the keys given in the broker URL."""
        session = botocore.session.get_session()
        key, secret = self.client.userid, self.client.password
        if key and secret:
            session.set_credentials(key, secret, options.get("session_token"))
            logger.warning("SQS requests are signed with static keys from the broker URL; an "
                           "ECS task role or EC2 instance profile is preferred (no key to "
                           "store, leak or rotate)")
        return session


def client_configs(wait_time_seconds: int, user: Config | None) -> dict[str, Config]:
    """The botocore configuration of each client profile.

    ``receive`` waits out a long poll; ``publish`` is a publish's one retry policy
    (``runtime.publishing``: 4 attempts of at most 2 s to connect and 5 s to answer);
    ``ops`` (every other call) fails a dead connection in seconds, and the lane
    retries; ``shutdown`` makes one short attempt, as stock kombu's release client
    does, so a bad network cannot hold up a warm shutdown. The user's
    ``client-config`` is merged into ``receive``, ``publish`` and ``ops`` (so it can
    lengthen a publish's bounds), but cannot lengthen the shutdown's.
    """
    def merged(config: Config) -> Config:
        return config.merge(user) if user is not None else config

    shutdown = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1})
    return {
        # total_max_attempts counts the first try; botocore's max_attempts would not
        "receive": merged(Config(retries={"mode": "standard", "total_max_attempts": 6},
                                 connect_timeout=5, read_timeout=wait_time_seconds + 15,
                                 max_pool_connections=32)),
        "publish": merged(Config(retries={"mode": "standard", "total_max_attempts": 4},
                                 connect_timeout=2, read_timeout=5, max_pool_connections=32)),
        "ops": merged(Config(retries={"mode": "standard", "total_max_attempts": 3},
                             connect_timeout=5, read_timeout=10, max_pool_connections=32)),
        "shutdown": (user.merge(shutdown) if user is not None else shutdown),
    }
