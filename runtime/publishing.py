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
    when the batch would pass SQS's cap on a batch's payload (``MAX_BATCH_BYTES``, 1 MiB;
    each message is held to its own queue's maximum first, as one-by-one publishing
    is), ``flush_delay`` seconds (default ``0.05``) after the first, and at exit.
    ``delay()`` returns before its task is sent: the ``with`` block ends only when SQS
    has accepted every message, and otherwise raises
    :class:`~runtime.errors.PublishError` naming the task ids that were not accepted
    (every other one was). Per queue, one batch is on
    the wire at a time, retries included, and batches go in the order their messages
    were published, so a FIFO group keeps its order when a call is throttled
    (botocore's backoff) or entries are sent again; a full batch that must wait for the
    one before it holds up the ``delay()`` that filled it. Entries SQS fails on its
    side (``SenderFault`` false) are sent again, up to ``max_attempts`` times in all;
    a batch call that fails whole (after the client's attempts above) is not sent
    again, and no request is made for the tasks held after it: SQS throttles or
    cannot be reached, and the block ends within one call's bound instead of one per
    batch. SQS answers for each entry of a call on its own: should it fail one entry on
    its side and accept a later one of the same FIFO group in that call, the later one
    is queued first, and sending the failed one again cannot undo that. A message is
    built exactly as one-by-one publishing builds it (FIFO group and deduplication ids,
    delays, attributes), so each keeps its own. Outside the context publishing is
    unchanged and synchronous.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
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
from runtime.limits import MAX_MESSAGE_SIZE
from runtime.sqs_errors import error_code, typed_error

logger = logging.getLogger(__name__)

MAX_BATCH_BYTES = MAX_MESSAGE_SIZE
"""SQS's limit on a batch's total payload (bodies and attributes), 1 MiB since 2025; each
message is held to its own queue's maximum by the transport before it reaches a batch."""

_current: contextvars.ContextVar[BatchPublisher | None] = contextvars.ContextVar(
    "celery_sqs_kit_batch_publisher", default=None)


@dataclass
class _Entry:
    task_id: str
    request: dict[str, Any]  # SendMessage's arguments, less QueueUrl
    size: int
    attempts: int = 0


@dataclass
class _Queue:
    """One queue's batches: the one filling, and those taken and not yet sent, in order."""

    client: BaseClient
    url: str
    entries: list[_Entry] = field(default_factory=list)
    since: float = 0.0
    ready: deque[list[_Entry]] = field(default_factory=deque)
    taken: int = 0  # batches taken so far
    done: int = 0  # of those, batches sent (or given up), always the oldest ones
    sending: bool = False  # a thread is sending this queue's ready batches

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
    """What ``batch_publish`` yields; ``sent`` counts messages SQS accepted.

    Per queue, batches are sent in the order they were taken, one at a time, each with
    its retries before the next: whichever thread finds the queue idle (the caller's
    for a full batch, the timer's for a due one, ``close``) sends its ready batches
    until none is left, and a caller whose full batch waits behind another thread's
    call waits for it to be sent (so a fast producer is held back as before)."""

    def __init__(self, *, flush_delay: float = 0.05, max_attempts: int = 5) -> None:
        self.flush_delay = flush_delay
        self.max_attempts = max_attempts
        self.sent = 0
        self._lock = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._failed: dict[str, str] = {}  # task id -> why
        self._down: str | None = None  # why a batch call failed whole; nothing is sent after
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._flush_when_due, daemon=True,
                                       name="kit-sqs-batch-publish")

    def add(self, client: BaseClient, request: dict[str, Any], task_id: str) -> None:
        """Hold one SendMessage (its arguments) for the batch of its queue."""
        url = request["QueueUrl"]
        entry = _Entry(task_id, {k: v for k, v in request.items() if k != "QueueUrl"},
                       payload_size(request))  # within its queue's limit: the transport checked it
        with self._lock:
            queue = self._queues.setdefault(url, _Queue(client, url))
            taken = queue.taken
            if queue.entries and queue.size + entry.size > MAX_BATCH_BYTES:
                self._take(queue)
            if not queue.entries:
                queue.since = time.monotonic()
            queue.entries.append(entry)
            if len(queue.entries) >= BATCH_SIZE:
                self._take(queue)
            if queue.taken == taken:  # no batch of this call's to send
                return
            mine = queue.taken
            self._lock.wait_for(lambda: queue.done >= mine or not queue.sending)
            if queue.done >= mine:
                return
            queue.sending = True
        self._send_ready(queue)

    def _take(self, queue: _Queue) -> None:
        """Move the filling batch to the queue's ready ones (under the lock)."""
        queue.ready.append(queue.entries)
        queue.entries = []
        queue.taken += 1

    def _claim_due(self, now: float) -> list[_Queue]:
        """Take every batch due at ``now``; the queues this thread is now to send."""
        claimed = []
        with self._lock:
            for queue in self._queues.values():
                if queue.entries and now - queue.since >= self.flush_delay:
                    self._take(queue)
                if queue.ready and not queue.sending:
                    queue.sending = True
                    claimed.append(queue)
        return claimed

    def _flush_when_due(self) -> None:
        while not self._stop.wait(self.flush_delay / 2):
            for queue in self._claim_due(time.monotonic()):
                self._send_ready(queue)

    def _send_ready(self, queue: _Queue) -> None:
        """Send ``queue``'s ready batches in order, until none is left (the calling
        thread has set ``queue.sending``: no other thread sends this queue meanwhile)."""
        while True:
            with self._lock:
                if not queue.ready:
                    queue.sending = False
                    self._lock.notify_all()
                    return
                entries = queue.ready.popleft()
            try:
                self._send(queue, entries)
            finally:
                with self._lock:
                    queue.done += 1
                    self._lock.notify_all()

    def _send(self, queue: _Queue, entries: list[_Entry]) -> None:
        """One batch, with its retries: entries SQS failed on its side are sent again
        before the queue's next batch, so a FIFO group keeps its order."""
        while entries:
            with self._lock:
                if self._down is not None:
                    for entry in entries:
                        self._failed[entry.task_id] = f"not sent: {self._down}"
                    return
            for entry in entries:
                entry.attempts += 1
            outcome = send_batch(queue.client.send_message_batch, queue.url, entries,
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
            self._timer.join()  # it finishes what it was sending
        for queue in self._claim_due(float("inf")):
            self._send_ready(queue)
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
