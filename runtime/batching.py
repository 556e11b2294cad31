"""Acknowledgements as DeleteMessageBatch calls: up to 10 receipts per request,
sent when 10 are waiting or ``flush_delay`` after the first, and on shutdown.

Stock kombu sends one DeleteMessage per task. A failed entry is retried when
SQS says the failure was its own (``SenderFault`` false) or the whole call
failed transiently; otherwise it is logged with its queue and code. Nothing is
dropped silently: a receipt that could not be deleted means SQS will deliver
that message again (at-least-once), and the log says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from runtime.sqs_errors import error_code, is_transient
from runtime.ticker import Ticker

logger = logging.getLogger(__name__)

BATCH_SIZE = 10
MAX_ATTEMPTS = 5
_IDLE = 3600.0


@dataclass
class _Receipt:
    queue: str | None  # None when unknown: the default role's client
    url: str
    handle: str
    attempts: int = 0


class DeleteBatcher:
    """``add()`` from any thread; ``close()`` flushes what is left."""

    def __init__(self, client_for: Callable[[str | None], BaseClient], *,
                 flush_delay: float = 0.1) -> None:
        self._client_for = client_for
        self.flush_delay = flush_delay
        self._lock = threading.Lock()
        self._pending: list[_Receipt] = []
        self._first_at: float | None = None
        self._ticker = Ticker("kit-sqs-deletes", self._tick, interval=flush_delay)
        self.deleted = 0

    def add(self, queue: str | None, url: str, handle: str) -> None:
        with self._lock:
            self._pending.append(_Receipt(queue, url, handle))
            if self._first_at is None:
                self._first_at = time.monotonic()
            wake = len(self._pending) == 1 or len(self._pending) >= BATCH_SIZE
        if wake:
            self._ticker.wake()

    def _tick(self) -> float:
        with self._lock:
            if not self._pending:
                return _IDLE
            due_in = self.flush_delay - (time.monotonic() - (self._first_at or 0.0))
            if len(self._pending) < BATCH_SIZE and due_in > 0:
                return due_in
        # Before the delay is up only full batches go; the rest waits for its delay.
        self.flush(full_only=due_in > 0)
        return 0.0  # look again at once: receipts may have arrived during the flush

    def flush(self, *, full_only: bool = False) -> None:
        """Send what is pending (only full batches if ``full_only``), retrying
        transient failures a few times."""
        while True:
            with self._lock:
                batch = self._take_batch(full_only)
                if batch is None:
                    if not self._pending:
                        self._first_at = None
                    return
            retry = self._send(batch)
            if retry:
                with self._lock:
                    self._pending[:0] = retry

    def _take_batch(self, full_only: bool) -> list[_Receipt] | None:
        """Remove and return up to 10 receipts of one queue (caller holds the lock)."""
        by_url: dict[str, list[_Receipt]] = defaultdict(list)
        for r in self._pending:
            by_url[r.url].append(r)
        candidates = [rs for rs in by_url.values() if len(rs) >= BATCH_SIZE or not full_only]
        if not candidates:
            return None
        batch = candidates[0][:BATCH_SIZE]
        chosen = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in chosen]
        return batch

    def _send(self, batch: list[_Receipt]) -> list[_Receipt]:
        queue, url = batch[0].queue, batch[0].url
        entries = [{"Id": str(i), "ReceiptHandle": r.handle} for i, r in enumerate(batch)]
        for r in batch:
            r.attempts += 1
        try:
            response = self._client_for(queue).delete_message_batch(QueueUrl=url,
                                                                     Entries=entries)
        except (ClientError, BotoCoreError, OSError) as error:
            code = error_code(error)
            retry = [r for r in batch if r.attempts < MAX_ATTEMPTS] if is_transient(error) else []
            self._log_lost([r for r in batch if r not in retry], queue, code)
            if retry:
                time.sleep(min(0.05 * 2 ** batch[0].attempts, 2.0))
            return retry
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        self.deleted += len(batch) - len(failed)
        retry: list[_Receipt] = []
        for i, r in enumerate(batch):
            failure = failed.get(str(i))
            if failure is None:
                continue
            if not failure.get("SenderFault", True) and r.attempts < MAX_ATTEMPTS:
                retry.append(r)
            else:
                self._log_lost([r], queue, failure.get("Code", "unknown"))
        return retry

    @staticmethod
    def _log_lost(receipts: list[_Receipt], queue: str | None, code: str) -> None:
        if receipts:
            logger.warning("could not delete %d acknowledged message(s) from queue %r (%s): "
                           "SQS will deliver them again after their visibility timeout",
                           len(receipts), queue, code)

    def close(self) -> None:
        self._ticker.stop()
        self.flush()
