"""Keeps every message the worker holds invisible until it is acked or rejected.

Stock kombu never extends visibility: a task that runs (or waits for its ETA,
or sits prefetched) longer than the queue's visibility timeout is handed to
another worker while the first still has it. Here each held message is
extended with ChangeMessageVisibilityBatch when half its visibility window is
left, by the queue's visibility timeout each time, until it has been held for
SQS's 12-hour maximum. ``release()`` makes messages visible again at once
(visibility 0): used on warm shutdown for messages not yet started, and for
requeues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from runtime.batching import BATCH_SIZE
from runtime.sqs_errors import error_code
from runtime.ticker import Ticker

logger = logging.getLogger(__name__)

MAX_HOLD_SECONDS = 43_200
"""SQS caps a message's total invisibility at 12 hours from its first receive."""
MIN_TICK, MAX_TICK = 0.5, 60.0


@dataclass
class Held:
    queue: str | None  # None when the message's queue is unknown: the default role's client
    url: str
    handle: str
    visibility_timeout: int
    received_at: float
    visible_at: float

    @classmethod
    def to_release(cls, queue: str | None, url: str, handle: str) -> Held:
        """A message known only by queue, URL and receipt handle, to be released."""
        return cls(queue, url, handle, 0, 0.0, 0.0)


class VisibilityKeeper:
    def __init__(self, client_for: Callable[[str | None], BaseClient], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client_for = client_for
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}
        self._shortest = float("inf")
        self._ticker = Ticker("kit-sqs-visibility", self._tick, interval=MAX_TICK)

    def hold(self, tag: str, *, queue: str, url: str, visibility_timeout: int) -> None:
        now = self._clock()
        with self._lock:
            self._held[tag] = Held(queue, url, tag, visibility_timeout, now,
                                   now + visibility_timeout)
            # The thread only needs waking when this window is shorter than any it
            # is already ticking for; waking it per message costs a scan each time.
            wake = visibility_timeout < self._shortest
            self._shortest = min(self._shortest, visibility_timeout)
        if wake:
            self._ticker.wake()

    def forget(self, tag: str) -> Held | None:
        with self._lock:
            return self._held.pop(tag, None)

    def held(self) -> list[Held]:
        with self._lock:
            return list(self._held.values())

    def release(self, tags: Iterable[str]) -> None:
        """Visibility 0 now for these held messages, and stop extending them."""
        with self._lock:
            entries = [self._held.pop(t) for t in tags if t in self._held]
        self.release_entries(entries)

    def release_entries(self, entries: list[Held]) -> None:
        """Visibility 0 now for messages given by queue, URL and receipt handle."""
        self._change(entries, lambda _h: 0, "release")

    def release_all(self) -> None:
        with self._lock:
            tags = list(self._held)
        self.release(tags)

    def _tick(self) -> float:
        now = self._clock()
        with self._lock:
            due = [h for h in self._held.values()
                   if h.visible_at - now <= h.visibility_timeout / 2
                   and now - h.received_at < MAX_HOLD_SECONDS]
            next_tick = min((h.visibility_timeout / 4 for h in self._held.values()),
                            default=MAX_TICK)
        if due:
            changed = self._change(due, lambda h: self._extension(h, now), "extend")
            with self._lock:
                for h in changed:
                    if h.handle in self._held:
                        h.visible_at = now + self._extension(h, now)
        return min(max(next_tick, MIN_TICK), MAX_TICK)

    @staticmethod
    def _extension(h: Held, now: float) -> int:
        left = MAX_HOLD_SECONDS - int(now - h.received_at) - 1
        return max(0, min(h.visibility_timeout, left))

    def _change(self, entries: list[Held], timeout: Callable[[Held], int],
                what: str) -> list[Held]:
        """ChangeMessageVisibilityBatch per queue; returns the entries that succeeded."""
        by_url: dict[str, list[Held]] = defaultdict(list)
        for h in entries:
            by_url[h.url].append(h)
        done: list[Held] = []
        for url, held in by_url.items():
            for start in range(0, len(held), BATCH_SIZE):
                chunk = held[start:start + BATCH_SIZE]
                request = [{"Id": str(i), "ReceiptHandle": h.handle,
                            "VisibilityTimeout": timeout(h)} for i, h in enumerate(chunk)]
                try:
                    response = self._client_for(chunk[0].queue).change_message_visibility_batch(
                        QueueUrl=url, Entries=request)
                except (ClientError, BotoCoreError, OSError) as error:
                    code = error_code(error)
                    logger.warning("could not %s visibility of %d message(s) on queue %r (%s)",
                                   what, len(chunk), chunk[0].queue, code)
                    continue
                failed = {f["Id"] for f in response.get("Failed", [])}
                for i, h in enumerate(chunk):
                    (logger.warning("could not %s visibility of a message on queue %r",
                                    what, h.queue) if str(i) in failed else done.append(h))
        return done

    def close(self) -> None:
        self._ticker.stop()
