"""Per-queue worker metrics as CloudWatch Embedded Metric Format (EMF) log lines.

Every ``$CELERY_SQS_KIT_METRICS_INTERVAL`` seconds (default 60) the worker's main
process writes one JSON line per queue to its standard output; the container's
``awslogs`` driver ships it to CloudWatch Logs, which turns it into metrics in
the namespace ``CelerySqsKit`` with the one dimension ``Queue``::

    {"_aws": {"Timestamp": 1767225600000, "CloudWatchMetrics": [{"Namespace": "CelerySqsKit",
      "Dimensions": [["Queue"]], "Metrics": [{"Name": "TasksReceived", "Unit": "Count"}, ...]}]},
     "Queue": "celery", "TasksReceived": 12, "TasksSucceeded": 10, ..., "RuntimeP95": 840.5,
     "ReceiveErrorTypes": {"Throttling": 2}, "DeadLetterReasons": {"rejected": 1},
     "LaneErrorTypes": {}, "IntervalSeconds": 60, "Pid": 7}

Why EMF and not PutMetricData: an EMF line costs log ingestion only (about 300
bytes a minute per queue per worker), needs no IAM permission, no request and no
credentials, and cannot slow a task or fail because CloudWatch is throttling; a
PutMetricData call per task would cost a request each ($0.01 per 1,000) and put a
network call on the task path. The line is the whole log event: it is written to
the process's own stdout (``sys.__stdout__``), never through Celery's logging,
whose prefix would make it unparsable.

Figures, counted over the interval:

=========================  ============  ===============================================
metric                     unit          what
=========================  ============  ===============================================
``TasksReceived``          Count         task messages the worker took from the queue
``TasksSucceeded``         Count         runs that returned
``TasksFailed``            Count         runs that raised (or were rejected, hit the hard
                                         time limit, lost their pool process)
``TasksRetried``           Count         runs that ended in ``self.retry()``
``RuntimeP50``/``P95``     Milliseconds  run time percentiles (nearest rank) of the runs
                                         that ended; absent when none did
``VisibilityExtensions``   Count         messages kept invisible longer (told by the lanes)
``DeadLetterMoves``        Count         messages the transport moved to the DLQ
``ReceiveErrors``          Count         failed ReceiveMessage calls; ``ReceiveErrorTypes``
                                         (a property, not a metric) breaks them down
``LaneErrors``             Count         background SQS calls (delete, visibility, move
                                         to the DLQ or parked) that failed, retried
                                         or not;
                                         ``LaneErrorTypes`` breaks them down as
                                         ``work/code`` (``delete/Throttling``)
=========================  ============  ===============================================

Where the task figures come from: ``task_received`` is sent in the main process.
``task_success``/``task_failure``/``task_retry`` are sent where the task ran,
which for prefork is a pool child, so they are not used. Instead, on
``task_received`` the request's own ``on_success``/``on_failure`` are wrapped on
that request instance: the pool calls them back in the main process (prefork:
from its result handler; threads and solo: in the main process's own threads)
with ``(failed, result, runtime)``, for every pool and every ``Request`` class (a
class-level override would be lost: ``celery.worker.request.create_request_cls``
subclasses the task's ``Request`` and replaces ``on_success``).

The transport's figures come from the events its lanes and receive loop tell
listeners (``runtime.events``): :func:`install` adds one listener that counts
them, so the transport knows nothing of metrics and no log line is parsed.

:func:`install` (the kit's worker hooks, :mod:`runtime.hooks`, call it, as they call
``runtime.liveness.install``) connects the signals and the listener; when the
worker is ready a thread (``runtime.ticker``) writes the lines, on a thread of
its own so a busy event loop cannot delay them, and the last partial interval is
written at shutdown.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import Ignore, Retry
from celery.signals import task_received, worker_ready, worker_shutdown

from runtime import events
from runtime.config import seconds_from_env
from runtime.ticker import Ticker

NAMESPACE = "CelerySqsKit"
DIMENSION = "Queue"
INTERVAL_ENV = "CELERY_SQS_KIT_METRICS_INTERVAL"
DEFAULT_INTERVAL = 60.0

TASKS_RECEIVED = "TasksReceived"
TASKS_SUCCEEDED = "TasksSucceeded"
TASKS_FAILED = "TasksFailed"
TASKS_RETRIED = "TasksRetried"
RUNTIME_P50 = "RuntimeP50"
RUNTIME_P95 = "RuntimeP95"
VISIBILITY_EXTENSIONS = "VisibilityExtensions"
DEAD_LETTER_MOVES = "DeadLetterMoves"
RECEIVE_ERRORS = "ReceiveErrors"
LANE_ERRORS = "LaneErrors"
COUNTERS = (TASKS_RECEIVED, TASKS_SUCCEEDED, TASKS_FAILED, TASKS_RETRIED,
            VISIBILITY_EXTENSIONS, DEAD_LETTER_MOVES, RECEIVE_ERRORS, LANE_ERRORS)
"""Always on every line (0 when nothing happened), so a quiet queue reads 0, not missing."""
BREAKDOWNS = {RECEIVE_ERRORS: "ReceiveErrorTypes", DEAD_LETTER_MOVES: "DeadLetterReasons",
              LANE_ERRORS: "LaneErrorTypes"}
"""Counters whose kinds are written as a property next to the metric."""

UNKNOWN_QUEUE = "unknown"
logger = logging.getLogger(__name__)


def configured_interval() -> float:
    """``$CELERY_SQS_KIT_METRICS_INTERVAL`` seconds, default 60."""
    seconds = seconds_from_env(INTERVAL_ENV)
    return DEFAULT_INTERVAL if seconds is None else seconds


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of non-empty ``values``: a value that was observed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class _Window:
    counts: Counter = field(default_factory=Counter)
    kinds: dict[str, Counter] = field(default_factory=dict)
    runtimes: list[float] = field(default_factory=list)


class Recorder:
    """Counts per queue and interval, from any thread; :meth:`lines` ends the interval."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._watched: set[str] = set()
        self._started = clock()

    def watch(self, queues: Iterable[str]) -> None:
        """Write a line for these queues every interval, even an all-zero one."""
        with self._lock:
            self._watched.update(queues)

    def count(self, queue: str, name: str, n: int = 1, kind: str | None = None) -> None:
        with self._lock:
            window = self._window(queue)
            window.counts[name] += n
            if kind is not None:
                window.kinds.setdefault(name, Counter())[kind] += n

    def runtime(self, queue: str, seconds: float) -> None:
        with self._lock:
            self._window(queue).runtimes.append(seconds)

    def _window(self, queue: str) -> _Window:
        """The queue's window (under the lock), made only when missing: this runs for
        every task, and ``setdefault`` would build a throwaway one each time."""
        window = self._windows.get(queue)
        if window is None:
            window = self._windows[queue] = _Window()
        return window

    def lines(self) -> list[str]:
        """One EMF line per queue for the interval that ends now, which starts the next."""
        now = self._clock()
        with self._lock:
            windows, self._windows = self._windows, {}
            queues = sorted(self._watched | set(windows))
            started, self._started = self._started, now
        return [emf_line(queue, windows.get(queue, _Window()), timestamp=now,
                         interval=now - started) for queue in queues]


def emf_line(queue: str, window: _Window, *, timestamp: float, interval: float) -> str:
    values: dict[str, float] = {name: window.counts[name] for name in COUNTERS}
    units = {name: "Count" for name in COUNTERS}
    if window.runtimes:
        millis = [seconds * 1000 for seconds in window.runtimes]
        values[RUNTIME_P50] = round(percentile(millis, 50), 3)
        values[RUNTIME_P95] = round(percentile(millis, 95), 3)
        units[RUNTIME_P50] = units[RUNTIME_P95] = "Milliseconds"
    document: dict[str, Any] = {
        "_aws": {"Timestamp": int(timestamp * 1000), "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [[DIMENSION]],
            "Metrics": [{"Name": name, "Unit": units[name]} for name in values]}]},
        DIMENSION: queue, **values,
        **{prop: dict(window.kinds.get(name, {})) for name, prop in BREAKDOWNS.items()},
        "IntervalSeconds": round(interval, 3), "Pid": os.getpid(),
    }
    return json.dumps(document, separators=(",", ":"))


RECORDER = Recorder()



# Task outcomes ----------------------------------------------------------------------------
def queue_of(request: Any) -> str:
    """The Celery queue a request came from: its routing key (the kit routes each queue
    by its own name)."""
    return (request.delivery_info or {}).get("routing_key") or UNKNOWN_QUEUE


def observe_request(request: Any, recorder: Recorder) -> None:
    """Count this request's outcome when the pool reports it, in the main process."""
    queue = queue_of(request)
    recorder.count(queue, TASKS_RECEIVED)
    on_success, on_failure = request.on_success, request.on_failure

    def forget() -> None:  # the wrappers refer to the request: break the cycle when done
        request.__dict__.pop("on_success", None)
        request.__dict__.pop("on_failure", None)

    def success(failed__retval__runtime: Any, **kwargs: Any) -> Any:
        try:
            record_outcome(recorder, queue, failed__retval__runtime)
        except Exception:  # never let a figure break acknowledging the task
            logger.exception("celery-sqs-kit metrics: could not record a task outcome")
        try:
            return on_success(failed__retval__runtime, **kwargs)
        finally:
            forget()

    def failure(exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        # return_ok: called by on_success for a run already counted there. Otherwise the
        # pool itself failed the run (hard time limit, pool process lost).
        if not return_ok:
            recorder.count(queue, TASKS_FAILED)
        try:
            return on_failure(exc_info, send_failed_event=send_failed_event,
                              return_ok=return_ok)
        finally:
            if not return_ok:
                forget()

    request.on_success, request.on_failure = success, failure


def record_outcome(recorder: Recorder, queue: str, failed__retval__runtime: Any) -> None:
    failed, retval, runtime = failed__retval__runtime
    if isinstance(runtime, (int, float)):
        recorder.runtime(queue, runtime)
    if not failed:
        recorder.count(queue, TASKS_SUCCEEDED)
        return
    exc = retval.exception
    if isinstance(exc, ExceptionWithTraceback):  # how a prefork child's exception arrives
        exc = exc.exc
    if isinstance(exc, Retry):
        recorder.count(queue, TASKS_RETRIED)
    elif not isinstance(exc, Ignore):
        recorder.count(queue, TASKS_FAILED)


# Transport events -----------------------------------------------------------------------
def count_event(recorder: Recorder, event: events.Event) -> None:
    """Count one of the transport's events (``runtime.events``)."""
    queue = event.queue or UNKNOWN_QUEUE
    if isinstance(event, events.Extended):
        recorder.count(queue, VISIBILITY_EXTENSIONS, event.count)
    elif isinstance(event, events.DeadLettered):
        recorder.count(queue, DEAD_LETTER_MOVES, event.count, kind=event.reason)
    elif isinstance(event, events.WorkFailed):
        recorder.count(queue, LANE_ERRORS, kind=f"{event.work}/{event.code}")
    elif isinstance(event, events.ReceiveFailed):
        recorder.count(queue, RECEIVE_ERRORS, kind=event.kind)


# Installation -----------------------------------------------------------------------------
class Emitter:
    """Writes the recorder's lines to ``stream`` once per ``interval``."""

    def __init__(self, recorder: Recorder, stream: TextIO, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recorder, self.stream, self.interval, self._clock = recorder, stream, interval, clock
        self._due = clock() + interval
        self._ticker = Ticker("celery-sqs-kit-metrics", self.tick, interval)

    def start(self) -> None:
        self._ticker.wake()  # starts the thread; the first tick only waits for ``_due``

    def tick(self) -> float:
        now = self._clock()
        if now >= self._due:
            self.flush()
            self._due = max(self._due + self.interval, now)
        return self._due - now if self._due > now else self.interval

    def flush(self) -> None:
        for line in self.recorder.lines():
            self.stream.write(line + "\n")
        self.stream.flush()

    def stop(self) -> None:
        """Write the last, partial interval: a warm shutdown's figures are not lost."""
        self._ticker.stop(timeout=1)
        self.flush()


_emitter: Emitter | None = None


def install() -> None:
    """Count and write this worker's figures. Checks the interval now, so a bad value
    stops the worker before it starts (:class:`ConfigError`). Idempotent."""
    configured_interval()
    task_received.connect(_on_task_received, dispatch_uid="celery-sqs-kit-metrics-received",
                          weak=False)
    worker_ready.connect(_on_worker_ready, dispatch_uid="celery-sqs-kit-metrics-ready",
                         weak=False)
    worker_shutdown.connect(_on_worker_shutdown, dispatch_uid="celery-sqs-kit-metrics-stop",
                            weak=False)
    if _count_event not in events.LISTENERS:
        events.LISTENERS.append(_count_event)


def _count_event(event: events.Event) -> None:
    count_event(RECORDER, event)


def _on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    if request is not None:
        observe_request(request, RECORDER)


def _on_worker_ready(sender: Any, **_: Any) -> None:
    """``sender`` is the consumer, in the worker's main process."""
    global _emitter
    RECORDER.watch(sender.app.amqp.queues.consume_from.keys())
    _emitter = Emitter(RECORDER, sys.__stdout__, configured_interval())
    _emitter.start()


def _on_worker_shutdown(**_: Any) -> None:
    if _emitter is not None:
        _emitter.stop()
