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
(the hub, pool threads, receive threads) and done on the lane's thread, in passes.
Each pass does some of every kind of work that is due, at most ``PASS_BATCHES``
calls of each, in this order: extensions (``runtime.visibility``; the earliest
due first), visibility changes (releases), moves (to the DLQ, or parked: sent to
the queue itself again with a delay, for a task whose ETA is too far away to
hold; SendMessageBatch, up to 10 to one queue within SQS's batch payload cap),
deletes (batches of 10, sent when 10 wait or ``flush_delay`` after a batch's oldest
ack; up to four on the wire at once when acks pile up). What is left waits for the
next pass, which follows at once: a backlog of one kind (thousands of parks, a
flood of poison messages) never holds up the extensions and acks of the others.
A move's delete is asked for only once its send landed. A pass plans the next one
for the first work due; any work asked for that is due sooner (a new hold's first
extension, whatever else is held) wakes the lane.

Moves take no prefetch slot (a parked task was never delivered), so the lane
counts them: ``moves_pending`` is the number of messages being moved whose copy
received is not deleted yet, which the transport counts against what the queue
may receive, so a flood of parks slows receiving instead of piling up work; the
lane calls ``on_room`` when some settle. A message is moved once per receipt
(asking twice does nothing).

Copies: a move is a send, then a delete. Entries SQS reported sent are never
sent again; but a batch whose answer was lost (a read timeout, a connection
reset after SQS acted) is sent again, by botocore's retries or the lane's, and
then the message is in its queue (or the DLQ) twice. SQS's standard queues are
at-least-once anyway: a task parked that way may run twice.

Deletes are the one kind of work the lane's thread does not wait for: each batch
goes out on a small pool of its own (``DELETES_IN_FLIGHT`` threads) and settles
there. A delete stalled on the network (an answer that never comes, then the
client's read timeout and retries: tens of seconds) must not hold up the
extensions that keep the queue's other messages invisible, or they reappear and
run twice; nor the acks behind it.

Why a lane per queue: a slow or failing queue (throttled, its role's STS
unreachable) delays only its own work; and a release is never undone by an
extension already on the wire, because both run on this one thread in order.
``release(wait=...)`` returns once its release has been sent (or at that bound),
as a requeue in stock kombu returns once its request has been.

Failures: nothing is dropped on a failure that may pass. Work whose call failed
transiently (throttling, 5xx, network, credentials: ``runtime.sqs_errors.is_transient``)
is kept and retried with a jittered backoff per kind of work (0.2 s doubling, at
most 30 s or a quarter of the visibility timeout), each failure logged. A final
answer (access denied, a stale receipt handle) is logged with the queue and the
code, and SQS then delivers the message again: at-least-once, never silent.

Dead letters carry the kit's own attributes, ``kit_reason`` and
``kit_source_queue``: any ``kit_`` attribute the message arrived with is dropped
(a sender cannot forge them), and with SQS's 10 attributes already taken, the
kit's win over the message's own; what was dropped is logged.

Events: landed extensions, DLQ moves and failed calls are told to
``runtime.events`` listeners (``runtime.metrics`` counts them); the lane itself
knows nothing of Celery or of who listens.

Shutdown (``close``): the thread stops: a pass on the wire ends after its current
call and makes no other, and ``close`` waits for it before sending anything, so
one thread at a time does a queue's work. Then, with a short-timeout,
single-attempt client, the pending acks go first (a lost ack runs a task again),
then moves (each batch followed by its delete), then every message still held is
released, the deadline (``timeout`` seconds) checked before each call. What is
left at the deadline is logged and left to SQS's visibility timeout; the only
request that can land after ``close`` returns is one already on the wire at the
deadline. Work asked for later (a receive that returned late) is done at once.
"""

from __future__ import annotations

import logging
import math
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
from runtime.publishing import MAX_BATCH_BYTES, payload_size
from runtime.sqs_errors import error_code, is_transient
from runtime.ticker import Ticker, Wait
from runtime.visibility import Held, extension, extension_due_at

logger = logging.getLogger(__name__)

KIT_PREFIX = "kit_"
"""Message attributes with this prefix are the kit's own, never taken from a sender."""
REASON_ATTRIBUTE = "kit_reason"
SOURCE_ATTRIBUTE = "kit_source_queue"
MAX_MESSAGE_ATTRIBUTES = 10
"""SQS's limit of message attributes on one message."""

IDLE = 3600.0
BACKOFF_BASE, BACKOFF_MAX = 0.2, 30.0
PASS_BATCHES = 4
"""Calls of each kind of work (extensions, visibility changes, moves) one pass makes at
most: the kinds take turns, so none waits behind another's backlog."""
DELETES_IN_FLIGHT = 4
"""DeleteMessageBatch calls a lane keeps on the wire at once when acks pile up."""
LATE_WORK_SECONDS = 5.0
"""Bound on work asked for after ``close`` (a receive that returned late), done at once."""
SHUTDOWN_RETRY = 0.2
"""Seconds between a shutdown call that failed transiently and the next try."""

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


_WORK = {"extend": "visibility extension", "change": "visibility change",
         "move": "move (to the DLQ, or parked)", "delete": "delete"}
"""Each kind of background work, in the order a pass does it (its backoff and its
``WorkFailed`` events), as logs say it."""


@dataclass(frozen=True)
class _Move:
    """A message sent as it is to another queue (the DLQ), or to its own queue with a
    delay (parked), then deleted."""

    message: dict[str, Any]
    to: str
    entry: dict[str, Any]
    """Its SendMessageBatch entry, less the ``Id``."""
    size: int
    """Bytes of the entry that count against the batch's payload cap."""
    reason: str | None
    """Why it goes to the DLQ (``kit_reason``); ``None`` for a park."""


class QueueLane:
    """``hold``, ``ack``, ``release``, ``change_visibility``, ``dead_letter``, ``park`` and
    ``forget`` from any thread; ``close(timeout)`` once, at shutdown."""

    def __init__(self, *, queue: str | None, url: str, visibility_timeout: int,
                 client: ClientFor, dead_letter_url: str | None = None,
                 flush_delay: float = 0.1, heartbeat: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Wait = threading.Event.wait,
                 delete_executor: Executor | None = None,
                 on_room: Callable[[], None] | None = None) -> None:
        """``clock`` and ``wait``: the lane's time, and how its thread sleeps on it;
        ``delete_executor``: where delete batches run (default: a pool of
        ``DELETES_IN_FLIGHT`` threads, made on first use); ``on_room``: called on the
        lane's threads when moves settle, so ``moves_pending`` fell."""
        self.queue = queue
        self.url = url
        self.visibility_timeout = visibility_timeout
        self.dead_letter_url = dead_letter_url
        self.flush_delay = flush_delay
        self.heartbeat = heartbeat
        self._client = client
        self._clock = clock
        self._on_room = on_room
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # a delete or a change settled
        self._held: dict[str, Held] = {}
        self._deletes: list[tuple[str, float]] = []  # (receipt handle, when it was acked)
        self._changes: list[tuple[str, int]] = []  # (receipt handle, visibility timeout)
        self._changing: set[str] = set()  # handles whose change is on the wire
        self._moves: dict[str, list[_Move]] = {}  # by destination, oldest first
        self._moving: set[str] = set()  # handles asked to move whose copy is not deleted yet
        cap = min(BACKOFF_MAX, max(visibility_timeout / 4, BACKOFF_BASE))
        self._backoff = {kind: _Backoff(cap) for kind in _WORK}
        self._pool: Executor | None = delete_executor
        self._owns_pool = delete_executor is None
        self._deletes_on_wire = 0  # batches
        self._deleting = 0  # their messages
        self._pass = threading.Lock()  # held by a pass, and by the shutdown's drain
        self._wake_at = math.inf  # when the lane's thread plans its next pass (lane clock)
        self._stopping = False  # close has begun: work waits for close() to send it in order
        self._closed = False
        self.deleted = 0
        name = queue or url.rsplit("/", 1)[-1]
        self._name = f"kit-sqs-lane-{name}"
        self._ticker = Ticker(self._name, self._tick, interval=IDLE, wait=wait)

    # asked for from any thread ---------------------------------------------------------
    def hold(self, handles: Iterable[str]) -> None:
        """Keep these just-received messages invisible until they are dealt with."""
        now = self._clock()
        held = None
        with self._lock:
            for handle in handles:
                held = self._held[handle] = Held(handle, now, now + self.visibility_timeout,
                                                 extending=self.heartbeat)
            # whatever else is held (some perhaps no longer extended), its first
            # extension must not wait for a pass planned later
            sooner = held is not None and self.heartbeat and self._before_plan(
                extension_due_at(held, self.visibility_timeout))
        if sooner:
            self._wake()

    def ack(self, handle: str) -> None:
        """Delete this message (batched); it stays invisible until the delete lands."""
        with self._lock:
            waiting = self._queue_delete(handle)
            due = self._deletes[0][1] + self.flush_delay if waiting < BATCH_SIZE \
                else self._clock()
            sooner = (waiting == 1 or waiting >= BATCH_SIZE) and self._before_plan(due)
        if sooner:
            self._wake()

    def _queue_delete(self, handle: str) -> int:
        """(lock held) Ask for this message's delete; how many deletes wait."""
        held = self._held.get(handle)
        if held is not None:
            held.done = True
        self._deletes.append((handle, self._clock()))
        return len(self._deletes)

    def _before_plan(self, due: float) -> bool:
        """(lock held) Whether work due at ``due`` comes before the lane's planned pass."""
        return due < self._wake_at

    def release(self, handles: Iterable[str], *, wait: float = 0.0) -> None:
        """Make these messages visible again at once; with ``wait``, return only once
        that has been sent (or refused), or after ``wait`` seconds."""
        handles = list(handles)
        self.change_visibility(handles, 0)
        if wait > 0 and not self._stopping:
            self._wait_for_changes(set(handles), time.monotonic() + wait)

    def change_visibility(self, handles: Iterable[str], timeout: int) -> None:
        """Stop holding these messages; visible again in ``timeout`` seconds."""
        with self._lock:
            for handle in handles:
                self._held.pop(handle, None)
                self._changes.append((handle, timeout))
        self._wake()

    def _wait_for_changes(self, handles: set[str], deadline: float) -> None:
        with self._lock:
            while handles & (self._changing | {handle for handle, _ in self._changes}):
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:  # shutdown sends it, after the acks
                    logger.info("queue %r: %d released message(s) not sent yet; visible "
                                "again once they are", self.queue, len(handles))
                    return
                self._settled.wait(left)

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
        self._move(message, self.dead_letter_url, reason, 0)

    def park(self, message: dict[str, Any], delay: int) -> None:
        """Send this message (body and attributes as received) to its own queue again,
        invisible for ``delay`` seconds, then delete the copy received; it is held until
        that delete lands, so it does not come back meanwhile."""
        self._move(message, self.url, None, delay)

    @property
    def moves_pending(self) -> int:
        """Messages asked to be moved (parked or dead-lettered) whose copy received is
        not deleted yet, nor their move given up."""
        return len(self._moving)

    def _move(self, message: dict[str, Any], to: str, reason: str | None, delay: int) -> None:
        handle = message["ReceiptHandle"]
        entry = self._move_entry(message, to, reason, delay)
        move = _Move(message, to, entry, payload_size(entry), reason)
        now = self._clock()
        with self._lock:
            if handle in self._moving:  # asked twice for one receipt: one copy
                return
            self._moving.add(handle)
            held = self._held.setdefault(handle, Held(handle, now, now + self.visibility_timeout,
                                                      extending=self.heartbeat))
            held.done = True
            self._moves.setdefault(to, []).append(move)
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
    def _tick(self) -> float | None:
        """One pass: up to ``PASS_BATCHES`` rounds, each one call of every kind of work
        that is due (extensions first), while any is."""
        with self._pass:
            if self._stopping:  # the shutdown's drain owns the queue's work now
                return None
            client = self._client("ops")
            due = self._due_extensions(self._clock())
            steps: list[tuple[str, Callable[[], bool | None]]] = [
                ("extend", lambda: self._extend(client, due)),
                ("change", lambda: self._send_changes(client)),
                ("move", lambda: self._send_moves(client)),
                ("delete", lambda: self._send_deletes(client, self._clock(), everything=False)),
            ]
            for _round in range(PASS_BATCHES):
                called = False
                for kind, step in steps:
                    if self._stopping:
                        return None
                    backoff = self._backoff[kind]
                    if self._clock() < backoff.retry_at:
                        continue
                    verdict = step()
                    if verdict is None:  # nothing to send, or settled elsewhere (deletes)
                        continue
                    called = True
                    if verdict:
                        backoff.failed(self._clock())
                    else:
                        backoff.succeeded()
                if not called:
                    break
            return self._next_delay()

    def _next_delay(self) -> float:
        """Seconds until the first work due, which is when the lane plans its next pass."""
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
            # Only messages still extended count: one SQS refused, or at the cap, is not
            # extended again, and must not stand for the others.
            extending = [extension_due_at(h, self.visibility_timeout)
                         for h in self._held.values() if h.extending]
            if extending:
                times.append(max(min(extending), self._backoff["extend"].retry_at))
            self._wake_at = min(times, default=now + IDLE)
            return max(0.0, self._wake_at - now)

    # each step sends one batch of what is ready: None (nothing to send), else whether
    # anything must be retried -----------------------------------------------------------
    def _due_extensions(self, now: float) -> list[tuple[Held, int]]:
        """Held messages whose extension is due, the earliest first, with the seconds
        each is to be extended by; those at the 12-hour cap are no longer extended."""
        vt = self.visibility_timeout
        with self._lock:
            due = sorted((h for h in self._held.values()
                          if h.extending and extension_due_at(h, vt) <= now),
                         key=lambda h: extension_due_at(h, vt))
        planned = [(h, extension(h, vt, now)) for h in due]
        for h, seconds in planned:
            if seconds == 0:
                h.extending = False
                logger.warning("a message of queue %r has been held for SQS's 12-hour maximum: "
                               "it cannot be extended and becomes visible again", self.queue)
        return [(h, seconds) for h, seconds in planned if seconds > 0]

    def _extend(self, client: BaseClient, due: list[tuple[Held, int]]) -> bool | None:
        with self._lock:  # each still held: a release meanwhile must not be undone
            batch = []
            while due and len(batch) < BATCH_SIZE:
                held, seconds = due.pop(0)
                if self._held.get(held.handle) is held:
                    batch.append((held, seconds))
        if not batch:
            return None
        sent_at = self._clock()
        outcome = send_batch(client.change_message_visibility_batch, self.url, batch,
                             lambda planned: {"ReceiptHandle": planned[0].handle,
                                              "VisibilityTimeout": planned[1]})
        for held, seconds in outcome.done:
            held.visible_at = sent_at + seconds
        if outcome.done:
            events.tell(events.Extended(self.queue, len(outcome.done)))
        for (held, _seconds), code in outcome.failed:
            held.extending = False  # refused for good: said once, not on every pass
            logger.warning("SQS refused to extend the visibility of a message on queue %r "
                           "(%s): it is no longer extended and may be delivered again",
                           self.queue, code)
            self._tell_failure("extend", code)
        if outcome.retry:  # planned again, from their Held, once the backoff allows
            self._log_retry("extend", len(outcome.retry), outcome.error)
            return True
        return False

    def _send_changes(self, client: BaseClient) -> bool | None:
        with self._lock:
            batch, self._changes = self._changes[:BATCH_SIZE], self._changes[BATCH_SIZE:]
            self._changing.update(handle for handle, _ in batch)
        if not batch:
            return None
        outcome: BatchOutcome[tuple[str, int]] = BatchOutcome(retry=batch)
        try:
            outcome = send_batch(client.change_message_visibility_batch, self.url, batch,
                                 lambda c: {"ReceiptHandle": c[0], "VisibilityTimeout": c[1]})
        finally:
            with self._lock:
                self._changes[:0] = outcome.retry
                self._changing.difference_update(handle for handle, _ in batch)
                self._settled.notify_all()
        for _change, code in outcome.failed:
            logger.info("could not change the visibility of a message on queue %r (%s): "
                        "it is visible again when its visibility timeout ends",
                        self.queue, code)
            self._tell_failure("change", code)
        if outcome.retry:
            self._log_retry("change", len(outcome.retry), outcome.error)
        return bool(outcome.retry)

    def _send_moves(self, client: BaseClient) -> bool | None:
        """One SendMessageBatch to one destination (they take turns): up to 10 moves
        within SQS's payload cap (a bigger message goes alone)."""
        with self._lock:
            if not self._moves:
                return None
            to = next(iter(self._moves))
            waiting = self._moves.pop(to)
            batch, size = [], 0
            while waiting and len(batch) < BATCH_SIZE and (
                    not batch or size + waiting[0].size <= MAX_BATCH_BYTES):
                size += waiting[0].size
                batch.append(waiting.pop(0))
            if waiting:
                self._moves[to] = waiting  # behind the other destinations
        outcome = send_batch(client.send_message_batch, to, batch, lambda move: move.entry)
        given_up = 0
        with self._lock:
            for move in outcome.done:
                self._queue_delete(move.message["ReceiptHandle"])  # sent by the delete step
            for move, _code in outcome.failed:
                self._held.pop(move.message["ReceiptHandle"], None)
                self._moving.discard(move.message["ReceiptHandle"])
                given_up += 1
            if outcome.retry:
                self._moves.setdefault(to, [])[:0] = outcome.retry
        for move in outcome.done:
            if move.reason is not None:  # a park was logged when it was decided, with its ETA
                logger.warning("moved message %s of queue %r to its DLQ: %s",
                               move.message.get("MessageId"), self.queue, move.reason)
                events.tell(events.DeadLettered(self.queue, 1, move.reason))
        for move, code in outcome.failed:
            logger.error("could not %s message %s of queue %r (%s); left for SQS to deliver "
                         "again", "park" if move.reason is None else "move to its DLQ",
                         move.message.get("MessageId"), self.queue, code)
            self._tell_failure("move", code)
        if given_up:
            self._room()
        if outcome.retry:
            self._log_retry("move", len(outcome.retry), outcome.error)
        return bool(outcome.retry)

    def _move_entry(self, message: dict[str, Any], to: str, reason: str | None,
                    delay: int) -> dict[str, Any]:
        attributes = {name: {k: v for k, v in value.items()
                             if k in ("DataType", "StringValue", "BinaryValue")}
                      for name, value in (message.get("MessageAttributes") or {}).items()}
        entry: dict[str, Any] = {"MessageBody": message["Body"]}
        if reason is None:  # parked: as it was received
            entry["DelaySeconds"] = delay
        else:
            attributes = self._dead_letter_attributes(message, attributes, reason)
        if attributes:
            entry["MessageAttributes"] = attributes
        if to.endswith(".fifo"):  # a DLQ: FIFO queues are never parked
            system = message.get("Attributes", {})
            entry["MessageGroupId"] = system.get("MessageGroupId", "dead-letters")
            entry["MessageDeduplicationId"] = (system.get("MessageDeduplicationId")
                                               or message["MessageId"])
        return entry

    def _dead_letter_attributes(self, message: dict[str, Any],
                                attributes: dict[str, dict[str, Any]],
                                reason: str) -> dict[str, dict[str, Any]]:
        """The message's own attributes and the kit's, which are never a sender's: its
        ``kit_`` ones are dropped, and with SQS's 10 taken, the kit's win (logged)."""
        kit = {REASON_ATTRIBUTE: reason, SOURCE_ATTRIBUTE: str(self.queue)}
        own = [name for name in attributes if not name.lower().startswith(KIT_PREFIX)]
        kept = own[:MAX_MESSAGE_ATTRIBUTES - len(kit)]
        dropped = sorted(set(attributes) - set(kept))
        if dropped:
            logger.warning("message %s of queue %r goes to its DLQ without its attribute(s) "
                           "%s: the kit's %s are its own, never a sender's, and SQS takes at "
                           "most %d", message.get("MessageId"), self.queue, ", ".join(dropped),
                           " and ".join(kit), MAX_MESSAGE_ATTRIBUTES)
        return {**{name: attributes[name] for name in kept},
                **{name: {"DataType": "String", "StringValue": text}
                   for name, text in kit.items()}}

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
            settled = [*outcome.done, *(handle for handle, _code in outcome.failed)]
            for handle in settled:
                self._held.pop(handle, None)
            moved = len(self._moving)
            self._moving.difference_update(settled)
            moved -= len(self._moving)
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
            self._settled.notify_all()
        if moved:
            self._room()
        if not self._stopping:
            self._ticker.wake()  # the next batches, or the backoff's retry

    def _room(self) -> None:
        if self._on_room is not None:
            self._on_room()

    def _deletes_landed(self, deadline: float) -> bool:
        """Wait until no delete is on the wire (``False`` at the deadline)."""
        with self._lock:
            while self._deletes_on_wire:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled.wait(left)
            return True

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
        with self._lock:
            self._settled.notify_all()  # a requeue waiting for its release: close sends it
        self._ticker.stop(timeout=0)

    def close(self, timeout: float) -> None:
        """Stop the thread, then send acks, moves and releases of what is still held, all
        within ``timeout`` seconds; work asked for later is done at once."""
        deadline = time.monotonic() + timeout
        self.begin_close()
        finished = self._drain(deadline)  # after the pass on the wire, if any, ended
        # (a pass that began meanwhile only finds it is stopping: a moment's join)
        self._ticker.stop(timeout=max(0.0, deadline - time.monotonic()) + 0.1)
        self._closed = True  # from here on, _wake drains whatever is asked for
        if self._pool is not None and self._owns_pool:
            self._pool.shutdown(wait=False)
            self._pool = None
        with self._lock:
            asked_meanwhile = bool(self._deletes or self._moves or self._changes)
        if finished and asked_meanwhile:
            self._drain(time.monotonic() + LATE_WORK_SECONDS)

    def _drain(self, deadline: float) -> bool:
        """Send everything: acks first, then moves (each batch's delete at once), then
        releases, the deadline checked before each call; ``False`` if it came first.
        Waits for a pass on the wire: one thread at a time does the queue's work."""
        if not self._pass.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._log_left()
            return False
        try:
            client = self._client("shutdown")
            with self._lock:
                for held in list(self._held.values()):
                    if not held.done:
                        del self._held[held.handle]
                        self._changes.append((held.handle, 0))
            while time.monotonic() < deadline:
                with self._lock:
                    deletes = bool(self._deletes) or self._deletes_on_wire > 0
                    moves, changes = bool(self._moves), bool(self._changes)
                if deletes:
                    self._send_deletes(client, self._clock(), everything=True)
                    if not self._deletes_landed(deadline):
                        break
                    with self._lock:
                        retry = bool(self._deletes)  # a transient failure put them back
                elif moves:
                    retry = bool(self._send_moves(client))
                elif changes:
                    retry = bool(self._send_changes(client))
                else:
                    return True
                if retry:
                    time.sleep(min(SHUTDOWN_RETRY, max(0.0, deadline - time.monotonic())))
            self._log_left()
            return False
        finally:
            self._pass.release()

    def _log_left(self) -> None:
        with self._lock:
            deletes = len(self._deletes) + self._deleting
            moves = sum(len(waiting) for waiting in self._moves.values())
            changes = len(self._changes)
        if deletes or moves:
            logger.warning("queue %r: %d acknowledged and %d moved (dead-lettered or parked) "
                           "message(s) not deleted before the shutdown deadline: SQS will "
                           "deliver them again", self.queue, deletes, moves)
        if changes:
            logger.warning("queue %r: %d message(s) not released before the shutdown deadline: "
                           "visible again when their visibility timeout ends", self.queue, changes)


def close_lanes(lanes: Iterable[QueueLane], timeout: float) -> None:
    """Close every lane at once, each within the same ``timeout``."""
    threads = [threading.Thread(target=lane.close, args=(timeout,), daemon=True,
                                name=f"kit-sqs-close-{lane.queue}") for lane in lanes]
    deadline = time.monotonic() + timeout + 1.0
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
