"""One queue's background SQS work, in order, on a thread of its own (its delete
batches settle on a small pool).

Every message the worker receives is in its queue's lane until SQS has deleted
it or has it back::

    hold ─▶ held: extended before it would reappear ─┬─ ack ──────────▶ deleting ─▶ gone
                                                      ├─ dead_letter ──▶ sent to the DLQ ─▶ deleting
                                                      ├─ park ─────────▶ sent to its queue again, delayed ─▶ deleting
                                                      ├─ release ──────▶ visibility 0 (or a backoff delay)
                                                      └─ forget ───────▶ left for SQS to redeliver

A message is kept invisible until its delete has landed, not only until its ack,
so a backed-up delete cannot let it reappear. Work is asked for from any thread
(the hub, pool threads, receive threads) and done on the lane's thread, on each
pass in this order: visibility changes, moves (to the DLQ, or parked: sent to the
queue itself again with a delay, for a task whose ETA is too far away to hold),
deletes (batches of 10, sent when 10 wait or ``flush_delay`` after a batch's oldest
ack; up to four on the wire at once when acks pile up), extensions
(``runtime.visibility``). A move's delete is asked for only once its send landed.

Deletes are the one kind of work the lane's thread does not wait for: each batch
goes out on a small pool of its own (``DELETES_IN_FLIGHT`` threads) and settles
there. A delete stalled on the network (an answer that never comes, then the
client's read timeout and retries: tens of seconds) must not hold up the
extensions that keep the queue's other messages invisible, or they reappear and
run twice; nor the acks behind it.

Why a lane per queue: a slow or failing queue (throttled, its role's STS
unreachable) delays only its own work; and a release is never undone by an
extension already on the wire, because both run on this one thread in order.

Failures: nothing is dropped on a failure that may pass. Work whose call failed
transiently (throttling, 5xx, network, credentials: ``runtime.sqs_errors.is_transient``)
is kept and retried with a jittered backoff per kind of work (0.2 s doubling, at
most 30 s or a quarter of the visibility timeout), each failure logged. A final
answer (access denied, a stale receipt handle) is logged with the queue and the
code, and SQS then delivers the message again: at-least-once, never silent.

Events: landed extensions, DLQ moves and failed calls are told to
``runtime.events`` listeners (``runtime.metrics`` counts them); the lane itself
knows nothing of Celery or of who listens.

Shutdown (``close``): the thread stops; then, with a short-timeout, single-attempt
client, the pending acks go first (a lost ack runs a task again), then dead-letter
moves, then every message still held is released, all within ``timeout`` seconds.
What is left at the deadline is logged and left to SQS's visibility timeout.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.client import BaseClient

from runtime import events
from runtime.batching import BATCH_SIZE, BatchOutcome, send_batch
from runtime.sqs_errors import error_code, is_transient
from runtime.ticker import Ticker
from runtime.visibility import Held, extension, extension_due_at

logger = logging.getLogger(__name__)

REASON_ATTRIBUTE = "kit_reason"
SOURCE_ATTRIBUTE = "kit_source_queue"
MAX_MESSAGE_ATTRIBUTES = 10
"""SQS's limit of message attributes on one message."""

IDLE = 3600.0
BACKOFF_BASE, BACKOFF_MAX = 0.2, 30.0
DELETES_IN_FLIGHT = 4
"""DeleteMessageBatch calls a lane keeps on the wire at once when acks pile up."""
LATE_WORK_SECONDS = 5.0
"""Bound on work asked for after ``close`` (a receive that returned late), done at once."""

ClientFor = Callable[[str], BaseClient]
"""``client(profile)``: the queue's SQS client, ``"ops"`` or ``"shutdown"``."""


class _Backoff:
    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.failures = 0
        self.retry_at = 0.0

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = min(self.cap, BACKOFF_BASE * 2 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0


_WORK = {"change": "visibility change", "move": "move (to the DLQ, or parked)",
         "delete": "delete", "extend": "visibility extension"}
"""Each kind of background work (its backoff and its ``WorkFailed`` events) as logs say it."""


@dataclass(frozen=True)
class _Move:
    """A message sent as it is to another queue (the DLQ), or to its own queue with a
    delay (parked), then deleted."""

    message: dict[str, Any]
    to: str
    reason: str = ""
    """Why it goes to the DLQ (``kit_reason``)."""
    delay: int = 0
    """DelaySeconds of a park."""


class QueueLane:
    """``hold``, ``ack``, ``release``, ``change_visibility``, ``dead_letter``, ``park`` and
    ``forget`` from any thread; ``close(timeout)`` once, at shutdown."""

    def __init__(self, *, queue: str | None, url: str, visibility_timeout: int,
                 client: ClientFor, dead_letter_url: str | None = None,
                 flush_delay: float = 0.1, heartbeat: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 delete_executor: Executor | None = None) -> None:
        """``delete_executor``: where delete batches run (default: a pool of
        ``DELETES_IN_FLIGHT`` threads, made on first use)."""
        self.queue = queue
        self.url = url
        self.visibility_timeout = visibility_timeout
        self.dead_letter_url = dead_letter_url
        self.flush_delay = flush_delay
        self.heartbeat = heartbeat
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}
        self._deletes: list[tuple[str, float]] = []  # (receipt handle, when it was acked)
        self._changes: list[tuple[str, int]] = []  # (receipt handle, visibility timeout)
        self._moves: list[_Move] = []
        cap = min(BACKOFF_MAX, max(visibility_timeout / 4, BACKOFF_BASE))
        self._backoff = {kind: _Backoff(cap) for kind in _WORK}
        self._pool: Executor | None = delete_executor
        self._owns_pool = delete_executor is None
        self._deletes_on_wire = 0  # batches
        self._deleting = 0  # their messages
        self._deletes_settled = threading.Condition(self._lock)
        self._stopping = False  # close has begun: work waits for close() to send it in order
        self._closed = False
        self.deleted = 0
        name = queue or url.rsplit("/", 1)[-1]
        self._name = f"kit-sqs-lane-{name}"
        self._ticker = Ticker(self._name, self._tick, interval=IDLE)

    # asked for from any thread ---------------------------------------------------------
    def hold(self, handles: Iterable[str]) -> None:
        """Keep these just-received messages invisible until they are dealt with."""
        now = self._clock()
        with self._lock:
            first = not self._held
            for handle in handles:
                self._held[handle] = Held(handle, now, now + self.visibility_timeout,
                                          extending=self.heartbeat)
        if first and self.heartbeat:
            self._wake()

    def ack(self, handle: str) -> None:
        """Delete this message (batched); it stays invisible until the delete lands."""
        waiting = self._queue_delete(handle)
        if waiting == 1 or waiting >= BATCH_SIZE:
            self._wake()

    def _queue_delete(self, handle: str) -> int:
        with self._lock:
            held = self._held.get(handle)
            if held is not None:
                held.done = True
            self._deletes.append((handle, self._clock()))
            return len(self._deletes)

    def release(self, handles: Iterable[str]) -> None:
        """Make these messages visible again at once."""
        self.change_visibility(handles, 0)

    def change_visibility(self, handles: Iterable[str], timeout: int) -> None:
        """Stop holding these messages; visible again in ``timeout`` seconds."""
        with self._lock:
            for handle in handles:
                self._held.pop(handle, None)
                self._changes.append((handle, timeout))
        self._wake()

    def forget(self, handle: str) -> None:
        """Stop holding this message: SQS delivers it again when its visibility ends."""
        with self._lock:
            self._held.pop(handle, None)

    def dead_letter(self, message: dict[str, Any], reason: str) -> None:
        """Move this message to the queue's DLQ with ``reason``, then delete it; without a
        DLQ, leave it for SQS to deliver again (and to its redrive policy)."""
        handle = message["ReceiptHandle"]
        if not self.dead_letter_url:
            self.forget(handle)
            logger.error("message %s on queue %r is %s and the queue has no DLQ: left for SQS "
                         "to deliver again", message.get("MessageId"), self.queue, reason)
            return
        self._move(_Move(message, self.dead_letter_url, reason=reason))

    def park(self, message: dict[str, Any], delay: int) -> None:
        """Send this message (body and attributes as received) to its own queue again,
        invisible for ``delay`` seconds, then delete the copy received; it is held until
        that delete lands, so it cannot come back twice."""
        self._move(_Move(message, self.url, delay=delay))

    def _move(self, move: _Move) -> None:
        handle = move.message["ReceiptHandle"]
        now = self._clock()
        with self._lock:
            held = self._held.setdefault(handle, Held(handle, now, now + self.visibility_timeout,
                                                      extending=self.heartbeat))
            held.done = True
            self._moves.append(move)
        self._wake()

    def holds(self, handle: str) -> bool:
        with self._lock:
            return handle in self._held

    def _wake(self) -> None:
        if self._closed:
            self._drain(time.monotonic() + LATE_WORK_SECONDS)
        elif not self._stopping:
            self._ticker.wake()

    # the lane's thread -------------------------------------------------------------------
    def _tick(self) -> float:
        now = self._clock()
        client = self._client("ops")
        steps: list[tuple[str, Callable[[], bool | None]]] = [
            ("change", lambda: self._send_changes(client)),
            ("move", lambda: self._send_moves(client)),
            ("delete", lambda: self._send_deletes(client, now, everything=False)),
            ("extend", lambda: self._extend(client, now)),
        ]
        for kind, step in steps:
            backoff = self._backoff[kind]
            if now < backoff.retry_at:
                continue
            verdict = step()
            if verdict is None:  # settled elsewhere (deletes, on their own threads)
                continue
            if verdict:
                backoff.failed(self._clock())
            else:
                backoff.succeeded()
        return self._next_delay()

    def _next_delay(self) -> float:
        now = self._clock()
        times = []
        with self._lock:
            if self._changes:
                times.append(self._backoff["change"].retry_at)
            if self._moves:
                times.append(self._backoff["move"].retry_at)
            if self._deletes and self._deletes_on_wire < DELETES_IN_FLIGHT:
                # (with every slot on the wire, the first to settle wakes the lane)
                due = now if len(self._deletes) >= BATCH_SIZE else \
                    self._deletes[0][1] + self.flush_delay
                times.append(max(due, self._backoff["delete"].retry_at))
            extending = [extension_due_at(h, self.visibility_timeout)
                         for h in self._held.values() if h.extending]
        if extending:
            times.append(max(min(extending), self._backoff["extend"].retry_at))
        return max(0.0, min(times, default=now + IDLE) - now)

    # each step sends what is ready and says whether anything must be retried ---------------
    def _send_changes(self, client: BaseClient) -> bool:
        while True:
            with self._lock:
                batch, self._changes = self._changes[:BATCH_SIZE], self._changes[BATCH_SIZE:]
            if not batch:
                return False
            outcome = send_batch(client.change_message_visibility_batch, self.url, batch,
                                 lambda c: {"ReceiptHandle": c[0], "VisibilityTimeout": c[1]})
            for _change, code in outcome.failed:
                logger.info("could not change the visibility of a message on queue %r (%s): "
                            "it is visible again when its visibility timeout ends",
                            self.queue, code)
                self._tell_failure("change", code)
            if outcome.retry:
                with self._lock:
                    self._changes[:0] = outcome.retry
                self._log_retry("change", len(outcome.retry), outcome.error)
                return True

    def _send_moves(self, client: BaseClient) -> bool:
        while True:
            with self._lock:
                if not self._moves:
                    return False
                move = self._moves.pop(0)
            message = move.message
            parked = move.to == self.url
            try:
                client.send_message(**self._move_request(move, parked))
            except Exception as error:  # sorted below; none escapes the lane's thread
                if is_transient(error):
                    with self._lock:
                        self._moves.insert(0, move)
                    self._log_retry("move", 1, error)
                    return True
                self.forget(message["ReceiptHandle"])
                logger.error("could not %s message %s of queue %r (%s); left for SQS to deliver "
                             "again", "park" if parked else "move to its DLQ",
                             message.get("MessageId"), self.queue, error_code(error))
                self._tell_failure("move", error_code(error))
                continue
            if not parked:  # a park was logged when it was decided, with its task's ETA
                logger.warning("moved message %s of queue %r to its DLQ: %s",
                               message.get("MessageId"), self.queue, move.reason)
                events.tell(events.DeadLettered(self.queue, 1, move.reason))
            self._queue_delete(message["ReceiptHandle"])  # sent by the delete step after this

    def _move_request(self, move: _Move, parked: bool) -> dict[str, Any]:
        message = move.message
        attributes = {name: {k: v for k, v in value.items()
                             if k in ("DataType", "StringValue", "BinaryValue")}
                      for name, value in (message.get("MessageAttributes") or {}).items()}
        request: dict[str, Any] = {"QueueUrl": move.to, "MessageBody": message["Body"]}
        if parked:
            request["DelaySeconds"] = move.delay
        else:
            for name, text in ((REASON_ATTRIBUTE, move.reason),
                               (SOURCE_ATTRIBUTE, str(self.queue))):
                if len(attributes) < MAX_MESSAGE_ATTRIBUTES:  # the message's own come first
                    attributes[name] = {"DataType": "String", "StringValue": text}
        if attributes:
            request["MessageAttributes"] = attributes
        if move.to.endswith(".fifo"):  # a DLQ: FIFO queues are never parked
            system = message.get("Attributes", {})
            request["MessageGroupId"] = system.get("MessageGroupId", "dead-letters")
            request["MessageDeduplicationId"] = (system.get("MessageDeduplicationId")
                                                 or message["MessageId"])
        return request

    def _send_deletes(self, client: BaseClient, now: float, *, everything: bool) -> None:
        """Put the batches that are ready on the wire, each on a delete thread, while
        fewer than ``DELETES_IN_FLIGHT`` are there. A batch goes when full, or
        ``flush_delay`` after its oldest ack, or (``everything``) at close. Returns
        ``None``: each batch settles its own backoff (``_settle_deletes``)."""
        with self._lock:
            batches = []
            while self._deletes and self._deletes_on_wire < DELETES_IN_FLIGHT and (
                    everything or len(self._deletes) >= BATCH_SIZE
                    or now - self._deletes[0][1] >= self.flush_delay):
                batches.append([handle for handle, _at in self._deletes[:BATCH_SIZE]])
                del self._deletes[:BATCH_SIZE]
                self._deletes_on_wire += 1
                self._deleting += len(batches[-1])
            closed = self._closed
            if batches and self._pool is None and not closed:
                self._pool = ThreadPoolExecutor(max_workers=DELETES_IN_FLIGHT,
                                                thread_name_prefix=f"{self._name}-delete")
            pool = self._pool
        for batch in batches:
            if closed:  # late work after close: done at once, no pool left to wait for
                self._delete_batch(client, batch)
            else:
                pool.submit(self._delete_batch, client, batch)

    def _delete_batch(self, client: BaseClient, batch: list[str]) -> None:
        outcome: BatchOutcome[str] = BatchOutcome(retry=batch)  # if sorting itself failed
        try:
            outcome = send_batch(client.delete_message_batch, self.url, batch,
                                 lambda handle: {"ReceiptHandle": handle})
        finally:
            self._settle_deletes(batch, outcome)

    def _settle_deletes(self, batch: list[str], outcome: BatchOutcome[str]) -> None:
        now = self._clock()
        with self._lock:
            for handle in outcome.done:
                self._held.pop(handle, None)
            for handle, _code in outcome.failed:
                self._held.pop(handle, None)
            self.deleted += len(outcome.done)
            self._deletes[:0] = [(handle, now) for handle in outcome.retry]
            if outcome.retry:
                self._backoff["delete"].failed(now)
            elif not outcome.failed:
                self._backoff["delete"].succeeded()
        for code in sorted({code for _h, code in outcome.failed}):
            lost = sum(1 for _h, c in outcome.failed if c == code)
            logger.warning("could not delete %d acknowledged message(s) from queue %r "
                           "(%s): SQS will deliver them again after their visibility "
                           "timeout", lost, self.queue, code)
            self._tell_failure("delete", code)
        if outcome.retry:
            self._log_retry("delete", len(outcome.retry), outcome.error)
        with self._lock:  # settled only now: a shutdown waiting for it finds it all said
            self._deletes_on_wire -= 1
            self._deleting -= len(batch)
            self._deletes_settled.notify_all()
        if not self._stopping:
            self._ticker.wake()  # the next batches, or the backoff's retry

    def _deletes_landed(self, deadline: float) -> bool:
        """Wait until no delete is on the wire (``False`` at the deadline)."""
        with self._lock:
            while self._deletes_on_wire:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._deletes_settled.wait(left)
            return True

    def _extend(self, client: BaseClient, now: float) -> bool:
        vt = self.visibility_timeout
        with self._lock:
            due = [h for h in self._held.values()
                   if h.extending and extension_due_at(h, vt) <= now]
        planned = {h.handle: extension(h, vt, now) for h in due}
        for h in due:
            if planned[h.handle] == 0:
                h.extending = False
                logger.warning("a message of queue %r has been held for SQS's 12-hour maximum: "
                               "it cannot be extended and becomes visible again", self.queue)
        due = [h for h in due if planned[h.handle] > 0]
        for start in range(0, len(due), BATCH_SIZE):
            outcome = send_batch(client.change_message_visibility_batch, self.url,
                                 due[start:start + BATCH_SIZE],
                                 lambda h: {"ReceiptHandle": h.handle,
                                            "VisibilityTimeout": planned[h.handle]})
            for h in outcome.done:
                h.visible_at = now + planned[h.handle]
            if outcome.done:
                events.tell(events.Extended(self.queue, len(outcome.done)))
            for h, code in outcome.failed:
                h.extending = False  # refused for good: said once, not on every pass
                logger.warning("SQS refused to extend the visibility of a message on queue %r "
                               "(%s): it is no longer extended and may be delivered again",
                               self.queue, code)
                self._tell_failure("extend", code)
            if outcome.retry:
                self._log_retry("extend", len(outcome.retry), outcome.error)
                return True
        return False

    def _log_retry(self, work: str, count: int, error: BaseException | None) -> None:
        code = error_code(error) if error is not None else "retryable"
        logger.warning("queue %r: %s of %d message(s) failed (%s); kept to retry", self.queue,
                       _WORK[work], count, code)
        self._tell_failure(work, code)

    def _tell_failure(self, work: str, code: str) -> None:
        events.tell(events.WorkFailed(self.queue, work, code))

    # shutdown ------------------------------------------------------------------------------
    def begin_close(self) -> None:
        """Stop sending: from now on work waits for :meth:`close`, which sends the acks
        before the releases that shutdown brings."""
        self._stopping = True
        self._ticker.stop(timeout=0)

    def close(self, timeout: float) -> None:
        """Stop the thread, then send acks, moves and releases of what is still held, all
        within ``timeout`` seconds; work asked for later is done at once."""
        deadline = time.monotonic() + timeout
        self.begin_close()
        self._ticker.stop(timeout=min(2.0, timeout / 2))  # let a call on the wire finish
        finished = self._drain(deadline)
        self._closed = True  # from here on, _wake drains whatever is asked for
        if self._pool is not None and self._owns_pool:
            self._pool.shutdown(wait=False)
            self._pool = None
        with self._lock:
            asked_meanwhile = bool(self._deletes or self._moves or self._changes)
        if finished and asked_meanwhile:
            self._drain(time.monotonic() + LATE_WORK_SECONDS)

    def _drain(self, deadline: float) -> bool:
        """Send everything (acks first); ``False`` if the deadline came first."""
        client = self._client("shutdown")
        with self._lock:
            for held in list(self._held.values()):
                if not held.done:
                    del self._held[held.handle]
                    self._changes.append((held.handle, 0))
        while time.monotonic() < deadline:
            moves_left = self._send_moves(client)  # moves end in deletes: both before releases
            self._send_deletes(client, self._clock(), everything=True)
            if not self._deletes_landed(deadline):
                break
            with self._lock:
                deletes_left = bool(self._deletes)
            if not (self._send_changes(client) or moves_left or deletes_left):
                return True
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        with self._lock:
            deletes = len(self._deletes) + self._deleting
            moves, changes = len(self._moves), len(self._changes)
        if deletes or moves:
            logger.warning("queue %r: %d acknowledged and %d moved (dead-lettered or parked) "
                           "message(s) not "
                           "deleted before the shutdown deadline: SQS will deliver them again",
                           self.queue, deletes, moves)
        if changes:
            logger.warning("queue %r: %d message(s) not released before the shutdown deadline: "
                           "visible again when their visibility timeout ends", self.queue, changes)
        return False


def close_lanes(lanes: Iterable[QueueLane], timeout: float) -> None:
    """Close every lane at once, each within the same ``timeout``."""
    threads = [threading.Thread(target=lane.close, args=(timeout,), daemon=True,
                                name=f"kit-sqs-close-{lane.queue}") for lane in lanes]
    deadline = time.monotonic() + timeout + 1.0
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
