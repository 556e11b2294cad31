"""Blocking long polls on per-queue threads, results handed to the event loop.

kombu's asynchronous SQS client runs on pycurl inside Celery's event loop (the
hub). When a fast response completes before curl registers its socket, the hub
has no file descriptor to wait on and sleeps 100 ms (``kombu/asynchronous/hub.py``):
on a fast endpoint that stall, once per receive, caps a worker at a few dozen
tasks a second. Here each queue has daemon threads (one per receive in flight)
that long-poll with the thread-safe boto3 client and hand each result back
through a pipe the hub watches as a reader. The hub always has that descriptor,
so it never falls into the sleep, and callbacks still run on the hub thread,
where Celery's consumer expects them. No pycurl is needed.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MAX_THREADS = 16
"""Receive threads per queue at most (the receive window keeps fewer receives in flight)."""

Job = Callable[[], Any]
Done = Callable[[Any], None]


class Receiver:
    """``submit(queue, job, done, undo)``: ``job()`` runs on the queue's thread, then
    ``done(result or exception)`` runs on the hub thread, or, when the receiver was
    closed meanwhile, ``undo(result)`` runs on the queue's thread (so a batch
    received as shutdown began is given back, never left hidden).
    ``call_soon(callback)`` runs ``callback()`` on the hub thread, from any thread."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._results: deque[tuple[Done, Any]] = deque()
        self._jobs: dict[str, queue_module.SimpleQueue] = {}
        self._idle: dict[str, int] = {}  # per queue, threads waiting for a job
        self._threads: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        hub.add_reader(self._read_fd, self._on_readable)

    def submit(self, name: str, job: Job, done: Done, undo: Done) -> None:
        with self._lock:
            if self._closed:
                return
            jobs = self._jobs.setdefault(name, queue_module.SimpleQueue())
            if self._idle.get(name, 0) == 0 and self._threads.get(name, 0) < MAX_THREADS:
                # Every thread of this queue is in a receive: one more, so several
                # receives of a busy queue can be on the wire at once.
                self._threads[name] = self._threads.get(name, 0) + 1
                self._idle[name] = self._idle.get(name, 0) + 1
                threading.Thread(target=self._run, args=(name, jobs),
                                 name=f"kit-sqs-receive-{name}", daemon=True).start()
            self._idle[name] -= 1
        jobs.put((job, done, undo))

    def _run(self, name: str, jobs: queue_module.SimpleQueue) -> None:
        while True:
            item = jobs.get()
            if item is None:
                return
            job, done, undo = item
            try:
                result: Any = job()
            except BaseException as error:  # handed to the hub thread, which decides
                result = error
            if not self._hand_over(done, result):
                self._safely(undo, result)
                return
            with self._lock:
                self._idle[name] += 1

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the hub thread, soon; callable from any thread,
        since it wakes the hub through the pipe."""
        self._hand_over(lambda _result: callback(), None)

    def _hand_over(self, done: Done, result: Any) -> bool:
        with self._lock:
            # Checked under the lock close() holds while closing the pipe, so a
            # late result is never written to a descriptor number reused since.
            if self._closed:
                return False
            self._results.append((done, result))
            os.write(self._write_fd, b"x")
            return True

    def _on_readable(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        while self._results:
            done, result = self._results.popleft()
            done(result)

    def close(self) -> None:
        """Stop taking jobs; threads end after their current long poll."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name, jobs in self._jobs.items():
                for _thread in range(self._threads.get(name, 0)):
                    jobs.put(None)
            try:
                self._hub.remove_reader(self._read_fd)
            except Exception:  # the hub may already be closed at shutdown
                logger.debug("hub reader already gone")
            pending = list(self._results)
            self._results.clear()
            os.close(self._read_fd)
            os.close(self._write_fd)
        for done, result in pending:  # each runs, whatever an earlier one did
            self._safely(done, result)

    @staticmethod
    def _safely(callback: Done, result: Any) -> None:
        try:
            callback(result)
        except Exception:
            logger.exception("handling a receive result at shutdown failed")
