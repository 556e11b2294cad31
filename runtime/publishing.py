"""Batched publishing: many tasks sent as SendMessageBatch calls of up to 10.

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
seconds (default ``0.05``) after the first, and at exit. The ``with`` block ends
only when SQS has accepted every message: entries failing transiently
(throttling, 5xx, ``SenderFault`` false, the network) are sent again, up to
``max_attempts`` times in all; anything still not accepted raises
:class:`runtime.errors.PublishError` naming the task ids, so a caller never
believes a task was sent when it was not. A message is built exactly as one-by-one
publishing builds it (FIFO group and deduplication ids, delays, attributes), so
each keeps its own. Outside the context publishing is unchanged and synchronous.
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

from runtime.batching import BATCH_SIZE, send_batch
from runtime.errors import ConfigError, PublishError

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
            for entry in entries:
                entry.attempts += 1
            outcome = send_batch(pending.client.send_message_batch, pending.url, entries,
                                 lambda e: e.request)
            with self._lock:
                self.sent += len(outcome.done)
                for entry, code in outcome.failed:
                    self._failed[entry.task_id] = code
            entries = [e for e in outcome.retry if e.attempts < self.max_attempts]
            with self._lock:
                for entry in outcome.retry:
                    if entry.attempts >= self.max_attempts:
                        self._failed[entry.task_id] = _why(outcome.error) + \
                            f" after {entry.attempts} attempts"
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


def _why(error: BaseException | None) -> str:
    return type(error).__name__ if error is not None else "not accepted"


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
