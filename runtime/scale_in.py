"""ECS task scale-in protection while the worker runs a task.

ECS scales a service in by stopping tasks it picks; a protected task is not
picked. So while this worker runs at least one task it asks the ECS agent to
protect it (``PUT $ECS_AGENT_URI/task-protection/v1/state`` with
``{"ProtectionEnabled": true, "ExpiresInMinutes": N}``), renews that before it
expires, and clears it once the worker has been idle for a while (debounced, so
a steady trickle of short tasks does not flip it per task). Deployments still
replace protected tasks (SIGTERM, then the warm shutdown within the stop
timeout); protection only keeps busy workers out of scale-in.

:func:`install` (called by ``runtime.celeryconfig``) turns it on when
``ECS_AGENT_URI`` is set, i.e. only inside an ECS task. On ``worker_ready`` it
starts a thread in the worker's MAIN process that reads Celery's own count of
running requests (``celery.worker.state.active_requests``, kept by the consumer
as the pool accepts and finishes tasks). Task signals would not do: with the
prefork pool they fire in the child processes. The HTTP calls run on that
thread, never on the consumer's event loop, so a slow agent delays no ack.
Failures are logged and retried later; they never stop the worker.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_ready

from runtime.ticker import Ticker

AGENT_URI_ENV = "ECS_AGENT_URI"
PROTECTION_PATH = "/task-protection/v1/state"
EXPIRES_MINUTES = 60
"""Long enough that a few missed renewals do not matter, short enough that a
worker that stops renewing (hung) becomes a scale-in candidate within the hour."""
RENEW_BEFORE = 10 * 60.0
IDLE_SECONDS = 10.0
RETRY_SECONDS = 30.0
POLL_SECONDS = 1.0
HTTP_TIMEOUT = 5.0

logger = logging.getLogger(__name__)

Put = Callable[[bool], None]
"""Sets protection on (True) or off (False); raises on failure."""


@dataclass
class ProtectionState:
    """What the worker last told the agent, in ``time.monotonic()`` seconds."""

    protected_until: float | None = None
    idle_since: float | None = None
    retry_at: float = 0.0


class ScaleInProtection:
    """The decision: given "busy now?" each tick, when to set, renew and clear."""

    def __init__(self, put: Put, *, expires_minutes: int = EXPIRES_MINUTES,
                 idle_seconds: float = IDLE_SECONDS, renew_before: float = RENEW_BEFORE,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self._put = put
        self._expires = expires_minutes * 60.0
        self._idle = idle_seconds
        self._renew_before = min(renew_before, self._expires / 2)
        self._retry = retry_seconds
        self.state = ProtectionState()

    def tick(self, busy: bool, now: float) -> None:
        s = self.state
        if busy:
            s.idle_since = None
            if s.protected_until is None or now >= s.protected_until - self._renew_before:
                self._apply(True, now)
            return
        if s.protected_until is None:
            return
        s.idle_since = s.idle_since if s.idle_since is not None else now
        if now - s.idle_since >= self._idle:
            self._apply(False, now)

    def _apply(self, enabled: bool, now: float) -> None:
        if now < self.state.retry_at:
            return
        try:
            self._put(enabled)
        except Exception as error:  # the agent is an aid, never a reason to stop
            self.state.retry_at = now + self._retry
            logger.warning("celery-sqs-kit: scale-in protection %s failed (retry in %.0f s): "
                           "%s", "set" if enabled else "clear", self._retry, error)
            return
        self.state.protected_until = now + self._expires if enabled else None
        self.state.idle_since = None
        logger.info("celery-sqs-kit: scale-in protection %s",
                    f"set for {self._expires / 60:.0f} min" if enabled else "cleared (idle)")


def agent_put(agent_uri: str, expires_minutes: int = EXPIRES_MINUTES) -> Put:
    """The agent's task-protection call; raises unless it answered with ``protection``."""

    def put(enabled: bool) -> None:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = expires_minutes
        request = urllib.request.Request(
            agent_uri.rstrip("/") + PROTECTION_PATH, data=json.dumps(body).encode(),
            method="PUT", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"HTTP {error.code}: {error.read()[:300]!r}") from None
        if "protection" not in answer:
            raise RuntimeError(f"agent answered {json.dumps(answer)[:300]}")

    return put


def install() -> None:
    """Protect this worker from scale-in while it runs tasks, inside an ECS task only."""
    if os.environ.get(AGENT_URI_ENV):
        worker_ready.connect(_on_worker_ready, dispatch_uid="celery-sqs-kit-scale-in",
                             weak=False)


def _on_worker_ready(**_: Any) -> None:
    from celery.worker import state

    protection = ScaleInProtection(agent_put(os.environ[AGENT_URI_ENV]))

    def tick() -> None:
        protection.tick(len(state.active_requests) > 0, time.monotonic())

    Ticker("celery-sqs-kit-scale-in", tick, POLL_SECONDS).wake()
