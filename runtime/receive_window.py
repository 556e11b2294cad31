"""When a queue receives again, and how many receives it keeps in flight: full
batches, never more messages than the prefetch window, never an idle pool.

Stock kombu receives as soon as one prefetch slot is free, so a busy worker makes
receives of 2 or 3 messages, and while the window is full it re-schedules its
receive on every pass of the event loop, spinning. Here a queue receives when a
batch's worth of slots is free: 10 (SQS's maximum), or half the prefetch window
when that is smaller. For a queue's extra receives, slots already asked for by its
own receives in flight and by busy queues' count as taken, so several receives in
flight never bring more than the window (a queue's first receive, as stock's only
one, may pass it by a batch, so queues sharing a window never starve each other;
an idle queue's long poll is such a first receive, and takes no busy queue's room).

A busy queue (its last receive brought messages) keeps up to ``max_in_flight``
receives on the wire at once, as many as the free slots allow (acks that free a
batch's worth start another at once, not only a receive coming back): one receive per
round trip would cap a worker at 10 messages per round trip, which at real SQS
latency (5 to 20 ms) is far below what the pool can run. An idle queue keeps one,
a long poll, so idling costs one request per wait time whatever ``max_in_flight`` is.

With nothing in flight and no room for a batch, a queue is parked, costing
nothing; acks and rejects (from whatever thread the pool acks on) and a wider
window reconsider it. Once any slot is free a parked queue waits at most
``batch_wait`` seconds for the rest, so a small window (``worker_prefetch_multiplier
= 1``, where half the window may be all the pool's processes) never leaves a
process idle for longer than that.

The window covers the round trip. While a receive is on the wire the pool keeps
working, so a window of just the prefetch count caps a worker at about
window / (round trip + the time to run a batch) messages a second: at 15 ms a
request, a window of 20 runs a fast pool at under half its speed. The window is
therefore the prefetch count plus what the worker gets through in one receive
round trip: the rate it is being delivered messages (decaying over a quarter of a
second) times the round trip, at most the prefetch count again and at most what
the receives in flight can bring (``max_in_flight`` x 10, so Celery widening the
window for held ETA tasks does not widen this). The round trip is a moving average
of the durations of receives, timed on their own thread, that started while the
queue was busy and came back full (so a batch was waiting: a long poll that waited
for messages is not a round trip), and that took under ``MAX_ROUND_TRIP``. Slow
tasks make the rate small and the window stays the prefetch count, so a worker
running long tasks holds back no more from the others than Celery's own setting
says; an idle worker's rate decays to nothing.

Every decision runs on the hub thread; other threads only ask for one through
``wake``, which runs a callback on the hub thread and wakes it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

SQS_MAX_MESSAGES = 10
RATE_MEMORY = 0.25
"""Seconds over which the delivery rate decays (to ``1/e``)."""
ROUND_TRIP_WEIGHT = 0.2
"""Weight of the newest full receive in the round trip's moving average."""
MAX_ROUND_TRIP = 1.0
"""Seconds; a receive that took longer waited or was retried, and is not a sample."""


class ReceiveWindow:
    """``schedule(queue)`` on the hub thread when a queue may receive (at start, and
    when one of its receives completed: ``received`` first); ``slots_freed()`` from
    any thread after an ack, reject or wider window. ``qos`` is the channel's QoS:
    ``prefetch_count`` (0: no limit) and ``unacked()``."""

    def __init__(self, qos: Any, hub: Any, *, receive: Callable[[str, int], None],
                 wake: Callable[[Callable[[], None]], None], batch_wait: float,
                 max_in_flight: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self._qos = qos
        self._hub = hub
        self._receive = receive
        self._wake = wake
        self._clock = clock
        self.batch_wait = batch_wait
        self.max_in_flight = max_in_flight
        self._parked: set[str] = set()
        self._wanting: set[str] = set()  # busy, with fewer receives in flight than allowed
        # per queue, the receives in flight: (messages asked for, started while busy)
        self._asked: dict[str, list[tuple[int, bool]]] = {}
        self._busy: set[str] = set()
        self._timer: Any = None
        self._hub_thread: int | None = None
        self.round_trip: float | None = None
        """Moving average of busy full receives' durations, seconds (``None``: none yet)."""
        self._recent = 0.0  # messages delivered, decaying with RATE_MEMORY
        self._recent_at = clock()

    def schedule(self, queue: str) -> None:
        self._hub_thread = threading.get_ident()
        asked = self._asked.setdefault(queue, [])
        limit = self.max_in_flight if queue in self._busy else 1
        self._wanting.discard(queue)
        while len(asked) < limit:
            count = self._room(queue)
            if count is None:
                if asked:  # its receives in flight come back and schedule it again,
                    self._wanting.add(queue)  # and acks may make room for more before
                    return
                self._parked.add(queue)
                self._wait_for_the_batch()
                return
            self._start(queue, count)

    def received(self, queue: str, asked: int, got: int, took: float) -> None:
        """A receive of ``queue`` that asked for ``asked`` messages brought ``got`` in
        ``took`` seconds (timed around the request itself)."""
        now = self._clock()
        in_flight = self._asked.get(queue, [])
        started = next((entry for entry in in_flight if entry[0] == asked), None)
        if started is not None:
            in_flight.remove(started)
            if started[1] and got == asked and took < MAX_ROUND_TRIP:
                self.round_trip = took if self.round_trip is None else \
                    self.round_trip + ROUND_TRIP_WEIGHT * (took - self.round_trip)
        self._recent = self._recent_now(now) + got
        self._recent_at = now
        if got:
            self._busy.add(queue)
        else:
            self._busy.discard(queue)
            self._wanting.discard(queue)

    def slots_freed(self) -> None:
        # Unlocked on purpose. The ack freed its slot before this reads _parked;
        # schedule() checks for room, then parks, then checks for a free slot again
        # (to start the batch_wait timer). An ack landing between schedule()'s first
        # check and its parking finds nothing parked and wakes nothing, but the second
        # check sees its slot, so the timer resumes the queue within batch_wait.
        if not self._parked and not self._wanting:
            return
        if threading.get_ident() == self._hub_thread:
            self._reconsider()
        else:
            self._wake(self._reconsider)

    def _reconsider(self) -> None:
        for queue in list(self._wanting):
            if self._room(queue) is not None:
                self.schedule(queue)
        if not self._parked:
            return
        if any(self._room(queue) is not None for queue in self._parked):
            self._resume()
        else:
            self._wait_for_the_batch()

    def _wait_for_the_batch(self) -> None:
        free = self._free_slots()
        if self._timer is None and (free is None or free > 0):
            self._timer = self._hub.call_later(self.batch_wait, self._waited)

    def _waited(self) -> None:
        """The batch wait is over: a parked queue takes whatever slots are free."""
        self._timer = None
        parked, self._parked = self._parked, set()
        for queue in parked:
            free = self._free(queue)
            if free is not None and free < 1:
                self._parked.add(queue)  # an ack will reconsider it
            else:
                self._start(queue, SQS_MAX_MESSAGES if free is None
                            else min(free, SQS_MAX_MESSAGES))

    def _resume(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parked, self._parked = self._parked, set()
        for queue in parked:
            self.schedule(queue)

    def _start(self, queue: str, count: int) -> None:
        self._asked.setdefault(queue, []).append((count, queue in self._busy))
        self._receive(queue, count)

    def _recent_now(self, now: float) -> float:
        return self._recent * math.exp((self._recent_at - now) / RATE_MEMORY)

    def lookahead(self) -> int:
        """Slots beyond the prefetch count: the messages one round trip is worth."""
        if self.round_trip is None or not self._qos.prefetch_count:
            return 0
        rate = self._recent_now(self._clock()) / RATE_MEMORY
        return min(self._qos.prefetch_count, self.max_in_flight * SQS_MAX_MESSAGES,
                   int(rate * self.round_trip))

    def _free_slots(self) -> int | None:
        """Slots of the window not taken by delivered messages (``None``: no limit)."""
        window = self._qos.prefetch_count
        if not window:
            return None
        return max(0, window + self.lookahead() - self._qos.unacked())

    def _free(self, queue: str) -> int | None:
        """Free slots for ``queue``'s next receive (``None``: no limit). A queue's
        first receive counts only what was delivered, so queues sharing the window
        each get their turn (as with stock, one batch per queue may pass the window);
        its extra receives also count what is asked for by its own receives in flight
        and by busy queues'. An idle queue's long poll is that queue's first receive,
        the one allowed to pass the window: counted, 3 idle queues' polls would take a
        window of 20 and leave a busy queue one receive in flight."""
        free = self._free_slots()
        if free is None or not self._asked.get(queue):
            return free
        return free - sum(count for other, receives in self._asked.items()
                          if other == queue or other in self._busy for count, _ in receives)

    def _room(self, queue: str) -> int | None:
        """How many messages ``queue``'s next receive may ask for, or ``None`` when a
        batch's worth of slots is not free."""
        free = self._free(queue)
        if free is None:
            return SQS_MAX_MESSAGES
        batch = min(SQS_MAX_MESSAGES, max(1, math.ceil(self._qos.prefetch_count / 2)))
        return min(free, SQS_MAX_MESSAGES) if free >= batch else None
