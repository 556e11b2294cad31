"""Publishing: the retry policy of a publish, what it raises when SQS does not accept a
task, and batched publishing.

The retry policy
    The bundled transport sends every publish (SendMessage, and SendMessageBatch
    below) through its ``publish`` client: 2 s to connect, 5 s for the answer, 4
    attempts in all (botocore's standard retries: throttling backs off up to 1, 2 and
    4 s, 5xx and the network up to 50, 100 and 200 ms). Nothing else retries: the
    rendered configuration sets ``task_publish_retry = False``, because Celery's
    retry (kombu's ``ensure``) would only run that whole sequence again after a
    network error, and the kit's errors are not among kombu's connection errors. So
    ``apply_async`` returns once SQS has accepted the task, or raises: at once for a
    final answer, in well under a second when the endpoint refuses connections, in
    about 8 s when packets are dropped, in about 20 s when it accepts and never
    answers; never later than 4 x (2 + 5) s plus 7 s of backoff.

What it raises
    :class:`~runtime.errors.QueueAccessDenied`, :class:`~runtime.errors.QueueNotFound`,
    :class:`~runtime.errors.CredentialsError` and :class:`~runtime.errors.MessageTooLarge`
    for final answers, as before; :class:`~runtime.errors.PublishError` naming the
    task id and why for everything else (throttled or 5xx after the attempts, any
    other answer, an endpoint that refuses or does not answer): :func:`publish_error`.
    ``PublishError`` is also :class:`kombu.exceptions.OperationalError`, what Celery
    documents ``apply_async`` raises when it cannot reach the broker, so code that
    catches ``app.OperationalError`` keeps working.

Sent or not
    A task is in the queue when ``apply_async`` has returned, and not when it raised,
    but for one case no client can settle: an attempt whose answer was lost
    (``ReadTimeoutError``, ``ConnectionClosedError``; the reason then says "SQS may
    have queued it") may have been queued, and the next attempt queues it again. A
    FIFO queue drops such copies (the deduplication id is the task id and its retry
    count; SQS remembers it 5 minutes), so a task published again after a
    ``PublishError`` is queued once. A standard queue keeps them: the task may run
    twice, as at-least-once delivery allows anyway; make such tasks idempotent.

Batched publishing
    Publishing one task is one SendMessage. A producer that sends many at once (a
    ``group``, a loop of ``delay()`` calls, a backfill) can instead send them in
    batches, inside a context::

        from runtime.publishing import batch_publish

        with batch_publish(app):
            for order in orders:
                process.delay(order.id)

    Inside it, on the thread that entered it, every message published through the
    bundled transport is held and sent with others for the same queue: when 10 wait,
    when the batch would pass SQS's payload cap (``MAX_BATCH_BYTES``), ``flush_delay``
    seconds (default ``0.05``) after the first, and at exit. ``delay()`` returns before
    its task is sent: the ``with`` block ends only when SQS has accepted every
    message, and otherwise raises :class:`~runtime.errors.PublishError` naming the
    task ids that were not accepted (every other one was). Entries SQS fails on its
    side (``SenderFault`` false) are sent again, up to ``max_attempts`` times in all;
    a batch call that fails whole (after the client's attempts above) is not sent
    again, and no request is made for the tasks held after it: SQS throttles or
    cannot be reached, and the block ends within one call's bound instead of one per
    batch. A message is built exactly as one-by-one publishing builds it (FIFO group
    and deduplication ids, delays, attributes), so each keeps its own. Outside the
    context publishing is unchanged and synchronous.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectionError,
                                 CredentialRetrievalError, HTTPClientError, NoCredentialsError,
                                 ReadTimeoutError)

from runtime.batching import BATCH_SIZE, send_batch
from runtime.errors import ConfigError, CredentialsError, PublishError
from runtime.sqs_errors import error_code, typed_error

logger = logging.getLogger(__name__)

MAX_BATCH_BYTES = 262_144
"""SQS's limit on one message, and on a batch's total payload (bodies and attributes)."""

_current: contextvars.ContextVar[BatchPublisher | None] = contextvars.ContextVar(
    "celery_sqs_kit_batch_publisher", default=None)


@dataclass
class _Entry:
    task_id: str
    request: dict[str, Any]  # SendMessage's arguments, less QueueUrl
    size: int
    attempts: int = 0


@dataclass
class _Pending:
    client: BaseClient
    url: str
    entries: list[_Entry] = field(default_factory=list)
    since: float = 0.0

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


def payload_size(request: dict[str, Any]) -> int:
    """Bytes SQS counts against its limit: the body plus each attribute's name, type
    and value."""
    size = len(request["MessageBody"].encode())
    for name, value in (request.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(value.get("DataType", "").encode())
        size += len(str(value.get("StringValue", "")).encode()) + len(value.get("BinaryValue",
                                                                                b""))
    return size


class BatchPublisher:
    """What ``batch_publish`` yields; ``sent`` counts messages SQS accepted."""

    def __init__(self, *, flush_delay: float = 0.05, max_attempts: int = 5) -> None:
        self.flush_delay = flush_delay
        self.max_attempts = max_attempts
        self.sent = 0
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._failed: dict[str, str] = {}  # task id -> why
        self._down: str | None = None  # why a batch call failed whole; nothing is sent after
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._flush_when_due, daemon=True,
                                       name="kit-sqs-batch-publish")

    def add(self, client: BaseClient, request: dict[str, Any], task_id: str) -> None:
        """Hold one SendMessage (its arguments) for the batch of its queue."""
        url = request["QueueUrl"]
        entry = _Entry(task_id, {k: v for k, v in request.items() if k != "QueueUrl"},
                       payload_size(request))  # at most the limit: the transport checked it
        with self._lock:
            pending = self._pending.get(url)
            if pending is not None and pending.size + entry.size > MAX_BATCH_BYTES:
                full = self._take(url)
            else:
                full = None
            pending = self._pending.setdefault(url, _Pending(client, url, since=time.monotonic()))
            pending.entries.append(entry)
            if len(pending.entries) >= BATCH_SIZE:
                full = full or self._take(url)
        if full is not None:
            self._send(full)

    def _take(self, url: str) -> _Pending:
        return self._pending.pop(url)

    def _flush_when_due(self) -> None:
        while not self._stop.wait(self.flush_delay / 2):
            now = time.monotonic()
            with self._lock:
                due = [self._take(url) for url, p in list(self._pending.items())
                       if now - p.since >= self.flush_delay]
            for pending in due:
                self._send(pending)

    def _send(self, pending: _Pending) -> None:
        entries = pending.entries
        while entries:
            with self._lock:
                if self._down is not None:
                    for entry in entries:
                        self._failed[entry.task_id] = f"not sent: {self._down}"
                    return
            for entry in entries:
                entry.attempts += 1
            outcome = send_batch(pending.client.send_message_batch, pending.url, entries,
                                 lambda e: e.request)
            with self._lock:
                self.sent += len(outcome.done)
                for entry, code in outcome.failed:
                    self._failed[entry.task_id] = code
                if outcome.error is not None and outcome.retry:
                    # Failed whole after the client's own attempts: another call now
                    # would only wait out the same outage.
                    self._down = f"a batch call failed with {why(outcome.error)}"
                    for entry in outcome.retry:
                        self._failed[entry.task_id] = why(outcome.error)
                    return
                for entry in outcome.retry:
                    if entry.attempts >= self.max_attempts:
                        self._failed[entry.task_id] = \
                            f"failed on SQS's side {entry.attempts} times"
            entries = [e for e in outcome.retry if e.attempts < self.max_attempts]
            if entries:
                time.sleep(min(0.05 * 2 ** entries[0].attempts, 2.0))

    def close(self) -> None:
        """Send what is held; raise :class:`PublishError` if anything was not accepted."""
        self._stop.set()
        if self._timer.is_alive():
            self._timer.join()
        with self._lock:
            rest = [self._take(url) for url in list(self._pending)]
        for pending in rest:
            self._send(pending)
        if self._failed:
            raise PublishError(dict(self._failed))

    def start(self) -> None:
        self._timer.start()


UNCONFIRMED = (ReadTimeoutError, ConnectionClosedError)
"""Failures after the request was sent: SQS may have acted on it."""


def why(error: BaseException) -> str:
    """The reason a publish failed, as ``PublishError`` names it: the AWS code or the
    exception's type, and whether SQS may have queued it anyway."""
    if isinstance(error, UNCONFIRMED):
        return f"{error_code(error)}: sent, no answer (SQS may have queued it)"
    return error_code(error)


def publish_error(error: Exception, *, queue: str, task_id: str) -> Exception:
    """What a publish of ``task_id`` to ``queue`` that failed with ``error`` raises
    (module docstring): the kit's typed error for a final answer it has one for,
    ``PublishError`` for any other answer and for no answer, and ``error`` itself for
    anything else (a request botocore refused to build)."""
    if isinstance(error, ClientError):
        return typed_error(error, queue=queue, action="SendMessage") or \
            PublishError({task_id: why(error)})
    if isinstance(error, (ConnectionError, HTTPClientError)):
        return PublishError({task_id: why(error)})
    if isinstance(error, (NoCredentialsError, CredentialRetrievalError)):
        return CredentialsError(queue, "SendMessage", type(error).__name__)
    return error


def current() -> BatchPublisher | None:
    """The batch the calling context publishes into, if any."""
    return _current.get()


@contextmanager
def batch_publish(app: Any, *, flush_delay: float = 0.05,
                  max_attempts: int = 5) -> Iterator[BatchPublisher]:
    """Publish in batches inside the ``with`` block (see the module docstring)."""
    transport = str(app.conf.broker_transport or "")
    if transport != "runtime.transport:Transport":
        raise ConfigError("celery app", "broker_transport",
                          f"batched publishing needs the bundled transport "
                          f"('runtime.transport:Transport'), got {transport!r}")
    publisher = BatchPublisher(flush_delay=flush_delay, max_attempts=max_attempts)
    token = _current.set(publisher)
    publisher.start()
    try:
        yield publisher
    finally:
        _current.reset(token)
        publisher.close()
