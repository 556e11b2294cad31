"""celery-sqs-kit's bundled kombu transport: stock ``kombu.transport.SQS``, with
what it gets wrong for production fixed by subclassing.

Select it with one line of Celery configuration (the renderer's
``--transport bundled`` writes it)::

    broker_transport = "runtime.transport:Transport"

Every stock option still applies (``predefined_queues``, ``region``,
``wait_time_seconds``, ``polling_interval``, ``backoff_policy``/``backoff_tasks``,
``sts_role_arn``, ``sts_token_timeout``, ``client-config``...). What changes, and why:

Credentials
    Base credentials come from the default chain (ECS task role, instance
    profile). With ``sts_role_arn`` (global) or ``predefined_queues[q]["sts_role_arn"]``
    (per queue), the role is assumed through one botocore
    ``RefreshableCredentials`` per role, shared by every client that uses it and
    refreshed before it expires; the session name is ``celery-<host>-<pid>``,
    and ``sts_external_id`` is sent when set. Stock kombu keeps one expiry for
    all queues (others keep expired tokens after the first refresh), a fixed
    session name, and no ExternalId.

Request cost
    Receives ask for up to 10 messages, bounded by the prefetch window. Acks
    are DeleteMessageBatch calls of up to 10 receipts, sent when 10 wait or
    ``ack_flush_delay`` seconds (default ``0.1``) after the first, and on
    shutdown; failed entries are retried or logged, never dropped silently.
    Whether a queue has a DLQ is read from ``predefined_queues[q]["dead_letter_queue"]``,
    so no GetQueueAttributes call is made. With predefined queues the
    transport makes no ListQueues, GetQueueUrl or CreateQueue call.
    Stock: one DeleteMessage per task, 2.1 to 3.0 requests per task.

Receive loop
    Long polls run on one thread per queue with the boto3 client and hand
    results to Celery's event loop through a pipe (``runtime.receiver``). This
    removes stock's 100 ms hub stall after fast responses, and the need for
    pycurl. With ``polling_interval = 0`` an idle queue costs one receive per
    ``wait_time_seconds``: 180 requests an hour at 20 s (stock defaults: ~327).
    A queue receives again only when a batch's worth of prefetch slots is free
    (10, or half the prefetch window when that is smaller); until then it waits,
    parked, and acks and rejects resume it. Once any slot is free it waits at
    most ``receive_batch_wait`` seconds (default ``0.1``) for the rest, so a
    small window never leaves pool processes idle for long
    (``runtime.receive_window``). Stock receives as soon as one slot frees, so a
    busy worker makes many receives of 2 or 3 messages, and with a full window
    it re-schedules its receive on every pass of the event loop, spinning.

Visibility
    Every held message (prefetched, running, waiting for its ETA) is kept
    invisible with ChangeMessageVisibilityBatch, by the queue's
    ``visibility_timeout`` (``predefined_queues[q]["visibility_timeout"]``,
    default the ``visibility_timeout`` option) whenever half of it is left, up
    to SQS's 12-hour cap; the heartbeat stops at ack or reject
    (``visibility_heartbeat``, default ``True``). On warm shutdown and on
    requeue, messages are made visible at once (visibility 0), in batches.
    Stock: no extension, so long tasks run twice; requeues wait
    ``wait_time_seconds``.

Poison and rejected messages
    A message that is not a kombu message (not JSON, or no properties/headers)
    is sent to the queue's DLQ with its body and the attributes
    ``kit_reason`` and ``kit_source_queue``, then deleted. A task rejected
    without requeue (``Reject(requeue=False)``) goes to the DLQ the same way,
    at once and without running again. Without a DLQ both are left for SQS to
    redeliver, and logged. Stock: poison messages are acked and lost.

Errors
    Sync calls use botocore's standard retry mode (jittered exponential backoff
    on throttling and 5xx; ``client-config`` may override). A failed receive
    backs off with jitter (0.5 s doubling to 60 s) instead of polling again at
    once. Access denied, missing queue and expired or unobtainable credentials
    become :class:`runtime.errors.QueueAccessDenied`, :class:`~runtime.errors.QueueNotFound`
    and :class:`~runtime.errors.CredentialsError`, naming the queue, the action
    and what to check. Publishing raises them; the receive loop logs them and
    keeps retrying with backoff, so a fixed policy needs no worker restart.

Options (``broker_transport_options``), with defaults:
``ack_flush_delay=0.1``, ``receive_batch_wait=0.1``, ``visibility_heartbeat=True``,
``sts_external_id=None``, ``receive_max_backoff=60``; per predefined queue:
``dead_letter_queue`` (URL), ``visibility_timeout``, ``sts_role_arn``.
"""

from __future__ import annotations

import logging
import random
from functools import cached_property
from typing import Any

from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from kombu.transport import SQS, virtual
from kombu.utils.encoding import bytes_to_str
from vine import promise

from runtime.batching import DeleteBatcher
from runtime.credentials import RoleCredentials
from runtime.receive_window import ReceiveWindow
from runtime.receiver import Receiver
from runtime.sqs_errors import typed_error
from runtime.visibility import Held, VisibilityKeeper

logger = logging.getLogger(__name__)

REASON_ATTRIBUTE = "kit_reason"
SOURCE_ATTRIBUTE = "kit_source_queue"
RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount", "MessageGroupId"]


class QoS(SQS.QoS):
    """Stock QoS that tells its channel when acks and rejects free prefetch slots."""

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self.channel.receive_window.slots_freed()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)
        self.channel.receive_window.slots_freed()


class Channel(SQS.Channel):
    """Stock SQS channel with the kit's credentials, batching, heartbeat and receive loop."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read now: kombu clears channel.connection during close(), before the
        # final acks and releases are sent, and these all go through it.
        self._credentials = self.connection.credentials_for(self)
        for option in ("queue_name_prefix", "visibility_timeout", "wait_time_seconds", "region"):
            getattr(self, option)
        self._closing = False
        self._receive_failures: dict[str, int] = {}
        self._releases: list[Held] = []
        self._receiver: Receiver | None = None
        self.batcher = DeleteBatcher(self.sqs, flush_delay=self.ack_flush_delay)
        self.keeper = VisibilityKeeper(self.sqs)

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
    def receive_max_backoff(self) -> float:
        return float(self.transport_options.get("receive_max_backoff", 60))

    def _queue_option(self, queue: str | None, key: str, default: Any = None) -> Any:
        return (self.predefined_queues.get(queue) or {}).get(key, default) if queue else default

    def _visibility_timeout_of(self, queue: str) -> int:
        return int(self._queue_option(queue, "visibility_timeout", self.visibility_timeout))

    # clients ---------------------------------------------------------------------
    def sqs(self, queue: str | None = None) -> BaseClient:
        role = self._queue_option(queue, "sts_role_arn") or \
            self.transport_options.get("sts_role_arn")
        return self._credentials.client("sqs", role)

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
                             batch_wait=self.receive_batch_wait)

    def _schedule_queue(self, queue: str) -> None:
        if queue in self._active_queues:
            self.receive_window.schedule(queue)

    def _receive_now(self, queue: str) -> None:
        if queue in self._active_queues:
            self._get_bulk_async(queue, callback=promise(self._loop1, (queue,)))

    def basic_qos(self, *args: Any, **kwargs: Any) -> None:
        super().basic_qos(*args, **kwargs)  # Celery widens the window for ETA tasks
        self.receive_window.slots_freed()

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        q_url = self._new_queue(queue)
        qname = self.canonical_queue_name(queue)
        self.receiver.submit(
            qname, lambda: self._receive_blocking(qname, q_url, count),
            lambda result: self._on_received(qname, q_url, result, callback))
        return callback

    def _receive_blocking(self, qname: str, q_url: str, count: int) -> list[dict[str, Any]]:
        response = self.sqs(qname).receive_message(
            QueueUrl=q_url, MaxNumberOfMessages=count, WaitTimeSeconds=self.wait_time_seconds,
            MessageSystemAttributeNames=RECEIVE_ATTRIBUTES, MessageAttributeNames=["All"])
        messages = response.get("Messages", [])
        if messages and self._closing:
            self._give_back(qname, q_url, messages)  # arrived after shutdown began
            return []
        return messages

    def _give_back(self, qname: str, q_url: str, messages: list[dict[str, Any]]) -> None:
        """Make received messages visible again at once, undelivered."""
        self.keeper.release_entries(
            [Held.to_release(qname, q_url, m["ReceiptHandle"]) for m in messages])

    def _on_received(self, qname: str, q_url: str, result: Any, callback: Any) -> None:
        if isinstance(result, BaseException):
            self._on_receive_error(qname, result, callback)
            return
        self._receive_failures.pop(qname, None)
        deliver = None if self._closing else self.connection._callbacks.get(qname)
        if deliver is None:
            self._give_back(qname, q_url, result)
            result = []
        delivered = 0
        for message in result:
            payload = self._decode(message)
            if payload is None:
                self._dead_letter(qname, q_url, message, "undecodable: not a kombu message")
                continue
            if qname in self._noack_queues:
                self.batcher.add(qname, q_url, message["ReceiptHandle"])
            elif self.visibility_heartbeat:
                self.keeper.hold(message["ReceiptHandle"], queue=qname, url=q_url,
                                 visibility_timeout=self._visibility_timeout_of(qname))
            deliver(self._envelope_payload(payload, payload.get("body"), message, q_url))
            delivered += 1
        if callback is not None:
            callback(delivered or len(result))

    def _on_receive_error(self, qname: str, error: BaseException, callback: Any) -> None:
        failures = self._receive_failures[qname] = self._receive_failures.get(qname, 0) + 1
        typed = typed_error(error, queue=qname, action="ReceiveMessage") \
            if isinstance(error, ClientError) else None
        delay = min(self.receive_max_backoff, 0.5 * 2 ** (failures - 1)) * random.uniform(0.5, 1)
        logger.error("%s; polling again in %.1f s", typed or f"ReceiveMessage on queue "
                     f"{qname!r} failed: {error!r}", delay)
        if callback is not None and not self._closing:
            self.hub.call_later(delay, callback, 0)

    def _decode(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The kombu payload, or ``None`` for a message no consumer can use."""
        try:
            text = bytes_to_str(self._decode_python_message_body(message["Body"]))
        except (UnicodeDecodeError, KeyError, TypeError):
            return None
        payload = self._prepare_json_payload(text)
        if not isinstance(payload.get("properties"), dict) or "headers" not in payload:
            return None
        return payload

    # acknowledgements ----------------------------------------------------------------
    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        try:
            info = self.qos.get(delivery_tag).delivery_info
            sqs_message = info["sqs_message"]
        except KeyError:
            return virtual.Channel.basic_ack(self, delivery_tag)
        self.keeper.forget(delivery_tag)
        self.batcher.add(self._queue_of(info), info["sqs_queue"], sqs_message["ReceiptHandle"])
        return virtual.Channel.basic_ack(self, delivery_tag)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.keeper.forget(delivery_tag)
        if not requeue and not self.qos.is_backoff_task(delivery_tag):
            try:
                info = self.qos.get(delivery_tag).delivery_info
                message = info["sqs_message"]
            except KeyError:
                pass
            else:
                queue = self._queue_of(info)
                if self._queue_option(queue, "dead_letter_queue"):
                    self._dead_letter(queue, info["sqs_queue"], message,
                                      "rejected without requeue")
                    return virtual.Channel.basic_reject(self, delivery_tag, requeue=False)
        return super().basic_reject(delivery_tag, requeue=requeue)

    def _has_redrive_policy(self, queue: str | None, queue_url: str) -> bool:
        return bool(self._queue_option(queue, "dead_letter_queue"))

    def _restore(self, message: Any, unwanted_delivery_info: tuple[str, ...] = (
            "sqs_message", "sqs_queue")) -> None:
        info = message.delivery_info
        sqs_message, q_url = info.get("sqs_message"), info.get("sqs_queue")
        if sqs_message is None or q_url is None:
            return super()._restore(message, unwanted_delivery_info)
        handle = sqs_message["ReceiptHandle"]
        self.keeper.forget(handle)
        self._releases.append(Held.to_release(self._queue_of(info), q_url, handle))
        if not self._closing:
            self._flush_releases()

    def _flush_releases(self) -> None:
        releases, self._releases = self._releases, []
        if releases:
            self.keeper.release_entries(releases)

    def _queue_of(self, info: dict[str, Any]) -> str | None:
        routing_key = info.get("routing_key")
        return self.canonical_queue_name(routing_key) if routing_key else None

    # dead letters ----------------------------------------------------------------------
    def _dead_letter(self, queue: str | None, q_url: str, message: dict[str, Any],
                     reason: str) -> None:
        dlq = self._queue_option(queue, "dead_letter_queue")
        if not dlq:
            logger.error("message %s on queue %r is %s and the queue has no DLQ: left for SQS "
                         "to redeliver", message.get("MessageId"), queue, reason)
            return
        kwargs: dict[str, Any] = {
            "QueueUrl": dlq, "MessageBody": message["Body"],
            "MessageAttributes": {
                REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason},
                SOURCE_ATTRIBUTE: {"DataType": "String", "StringValue": str(queue)}},
        }
        if dlq.endswith(".fifo"):
            kwargs["MessageGroupId"] = message.get("Attributes", {}).get("MessageGroupId",
                                                                         "dead-letters")
            kwargs["MessageDeduplicationId"] = message["MessageId"]
        client = self.sqs(queue)
        try:
            client.send_message(**kwargs)
        except (ClientError, BotoCoreError) as error:
            logger.error("could not move message %s of queue %r to its DLQ (%s); left for SQS "
                         "to redeliver", message.get("MessageId"), queue,
                         typed_error(error, queue=str(queue), action="SendMessage")
                         if isinstance(error, ClientError) else error)
            return
        self.batcher.add(queue, q_url, message["ReceiptHandle"])
        logger.warning("moved message %s of queue %r to its DLQ: %s",
                       message.get("MessageId"), queue, reason)

    # publishing ------------------------------------------------------------------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        try:
            return super()._put(queue, message, **kwargs)
        except ClientError as error:
            typed = typed_error(error, queue=queue, action="SendMessage")
            if typed is None:
                raise
            raise typed from None

    # shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        steps = [
            super().close,  # cancels consumers; unacked messages come back via _restore
            self._flush_releases,
            self.keeper.release_all,
            *([self._receiver.close] if self._receiver is not None else []),
            self.batcher.close,  # the last acks
            self.keeper.close,
        ]
        for step in steps:
            try:
                step()
            except Exception:  # every step must run: a failed release must not cost an ack
                logger.exception("closing the SQS channel: %s failed", step.__name__)


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
            config = Config(retries={"mode": "standard", "max_attempts": 6},
                            connect_timeout=5, read_timeout=channel.wait_time_seconds + 15,
                            max_pool_connections=32)
            if options.get("client-config"):
                config = config.merge(Config(**options["client-config"]))
            self._credentials = RoleCredentials(
                region=channel.region, token_timeout=int(options.get("sts_token_timeout", 900)),
                external_id=options.get("sts_external_id"), client_config=config,
                endpoint_url=channel.endpoint_url)
        return self._credentials
