"""When a queue receives again: in full batches, without leaving the pool idle.

Stock kombu receives as soon as one prefetch slot is free, so a busy worker makes
receives of 2 or 3 messages, and while the window is full it re-schedules its
receive on every pass of the event loop, spinning. Here a queue receives when a
batch's worth of slots is free: 10 (SQS's maximum), or half the prefetch window
when that is smaller. Until then it is parked, costing nothing; acks and rejects
(from whatever thread the pool acks on) and a wider window reconsider it. Once any
slot is free a parked queue waits at most ``batch_wait`` seconds for the rest, so a
small window (``worker_prefetch_multiplier = 1``, where half the window may be all
the pool's processes) never leaves a process idle for longer than that.

Every decision runs on the hub thread; other threads only ask for one through
``wake``, which runs a callback on the hub thread and wakes it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

SQS_MAX_MESSAGES = 10


class ReceiveWindow:
    """``schedule(queue)`` on the hub thread when a queue is ready to receive;
    ``slots_freed()`` from any thread after an ack, reject or wider window."""

    def __init__(self, qos: Any, hub: Any, *, receive: Callable[[str], None],
                 wake: Callable[[Callable[[], None]], None], batch_wait: float) -> None:
        self._qos = qos
        self._hub = hub
        self._receive = receive
        self._wake = wake
        self.batch_wait = batch_wait
        self._parked: set[str] = set()
        self._timer: Any = None
        self._hub_thread: int | None = None

    def schedule(self, queue: str) -> None:
        self._hub_thread = threading.get_ident()
        if self._batch_fits():
            self._receive(queue)
            return
        self._parked.add(queue)
        self._wait_for_the_batch()

    def slots_freed(self) -> None:
        # Unlocked on purpose. The ack freed its slot before this reads _parked;
        # schedule() checks for room, then parks, then checks for a free slot again
        # (to start the batch_wait timer). An ack landing between schedule()'s first
        # check and its parking finds nothing parked and wakes nothing, but the second
        # check sees its slot, so the timer resumes the queue within batch_wait.
        if not self._parked:
            return
        if threading.get_ident() == self._hub_thread:
            self._reconsider()
        else:
            self._wake(self._reconsider)

    def _reconsider(self) -> None:
        if not self._parked:
            return
        if self._batch_fits():
            self._resume()
        else:
            self._wait_for_the_batch()

    def _wait_for_the_batch(self) -> None:
        if self._timer is None and self._qos.can_consume():
            self._timer = self._hub.call_later(self.batch_wait, self._waited)

    def _waited(self) -> None:
        self._timer = None
        if self._parked and self._qos.can_consume():
            self._resume()

    def _resume(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parked, self._parked = self._parked, set()
        for queue in parked:
            self._receive(queue)

    def _batch_fits(self) -> bool:
        free = self._qos.can_consume_max_estimate()  # None: no prefetch limit
        batch = min(SQS_MAX_MESSAGES, max(1, math.ceil(self._qos.prefetch_count / 2)))
        return free is None or free >= batch
