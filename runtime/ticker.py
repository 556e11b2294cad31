"""A daemon thread that runs one function periodically, or at once when woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

Wait = Callable[[threading.Event, float], bool]
"""How the thread sleeps: ``wait(wake_event, seconds)``, ``True`` if woken (tests run it
on a clock of their own)."""

logger = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str, tick: Callable[[], float | None], interval: float,
                 wait: Wait = threading.Event.wait) -> None:
        """``tick`` returns the seconds until it wants to run again (``None``: ``interval``)."""
        self._tick = tick
        self._interval = interval
        self._sleep = wait
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._start_lock = threading.Lock()

    def wake(self) -> None:
        self._ensure_started()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._started:
            self._thread.join(timeout)

    def _ensure_started(self) -> None:
        # Started lazily, in the process that uses it: a prefork parent must not
        # hand a half-copied thread to its children.
        with self._start_lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def _run(self) -> None:
        delay = self._interval
        while not self._stopping.is_set():
            self._sleep(self._wake, delay)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                next_delay = self._tick()
            except Exception:  # a failed tick must not end the thread
                logger.exception("%s: tick failed", self._thread.name)
                next_delay = None
            delay = self._interval if next_delay is None else max(next_delay, 0.0)
