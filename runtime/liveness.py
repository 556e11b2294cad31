"""The worker's half of the health check: keep the state file :mod:`runtime.health` reads.

:func:`install` connects a ``worker_ready`` handler (the kit's worker hooks,
:mod:`runtime.hooks`, call it: ``runtime.celeryconfig`` and a rendered bundled
``celeryconfig.py``, so every worker configured either way keeps the file). When the
worker is ready, the handler records the main process id and puts a timer on the
consumer's event loop (the kombu hub) that refreshes the file's timestamp. The
timer runs on the same loop that receives, acknowledges and dispatches tasks, so
a hung or stopped loop leaves the timestamp stale, which a thread of its own
would not. The timer survives broker reconnects (Celery cancels only the entries
made while connecting, and this one is made after).

Each refresh also records the pool's process ids (prefork; a threads pool has
none) and, from the bundled transport's channel, since when its receives have
been failing and the last error, so a check sees a dead pool process and lost
credentials too.

The bound on the timestamp's age is ``2 * wait_time_seconds + 10`` seconds (50 s
at the kit's 20 s long polls: generous, since the loop never waits on a poll),
or ``$CELERY_SQS_KIT_HEALTH_MAX_AGE`` seconds; the file is refreshed four times
per bound. With ``--pool=solo`` tasks run on the loop itself, so set the bound
above the longest task. Pools without an event loop (eventlet, gevent) keep no
file, and a warning says so.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.signals import worker_ready

from runtime.config import seconds_from_env
from runtime.errors import ConfigError
from runtime.health import WorkerState, state_path, write_state

MAX_AGE_ENV = "CELERY_SQS_KIT_HEALTH_MAX_AGE"
REFRESHES_PER_BOUND = 4

logger = logging.getLogger(__name__)


def max_age(wait_time_seconds: int) -> float:
    """The bound on the timestamp's age: the override, else derived from the long-poll wait."""
    override = configured_max_age()
    return 2 * wait_time_seconds + 10 if override is None else override


def configured_max_age() -> float | None:
    """``$CELERY_SQS_KIT_HEALTH_MAX_AGE`` as seconds, or ``None`` when unset."""
    return seconds_from_env(MAX_AGE_ENV)


def install() -> None:
    """Keep the health state file for every worker started in this process.

    Checks ``$CELERY_SQS_KIT_HEALTH_MAX_AGE`` now, at configuration time, so a bad
    value stops the worker before it starts (:class:`ConfigError`). Idempotent.
    """
    configured_max_age()
    worker_ready.connect(_on_worker_ready, dispatch_uid="celery-sqs-kit-liveness", weak=False)


def _on_worker_ready(sender: Any, **_: Any) -> None:
    """``sender`` is the worker's consumer; its ``hub`` is the event loop, if any."""
    hub = sender.hub
    try:
        path = state_path()
    except (ConfigError, OSError) as error:  # runtime.health says the same on every check
        logger.error("celery-sqs-kit: no health state is kept, so runtime.health reports the "
                     "worker unhealthy: %s", error)
        return
    if hub is None:
        logger.warning("celery-sqs-kit: this pool has no event loop; no health state is "
                       "kept at %s, so runtime.health reports the worker unhealthy", path)
        return
    from kombu.transport.SQS import Channel

    options = sender.app.conf.broker_transport_options or {}
    bound = max_age(options.get("wait_time_seconds", Channel.default_wait_time_seconds))
    pid = os.getpid()

    def refresh() -> None:
        channel = getattr(getattr(sender, "task_consumer", None), "channel", None)
        write_state(path, WorkerState(
            pid=pid, refreshed=time.monotonic(), max_age=bound, pool_pids=pool_pids(sender),
            receive_failing_since=getattr(channel, "receive_failing_since", None),
            last_receive_error=getattr(channel, "last_receive_error", "")))

    refresh()
    hub.call_repeatedly(bound / REFRESHES_PER_BOUND, refresh)
    logger.info("celery-sqs-kit: health state at %s (bound %.0f s)", path, bound)


def pool_pids(consumer: Any) -> tuple[int, ...]:
    """The prefork pool's process ids, as billiard holds them (none for other pools)."""
    processes = getattr(getattr(getattr(consumer, "pool", None), "_pool", None), "_pool", None)
    return tuple(p.pid for p in processes or () if getattr(p, "pid", None))
