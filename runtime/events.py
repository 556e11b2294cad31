"""What the bundled transport tells listeners as it works, so figures need no log parsing.

The lanes and the receive loop call :func:`tell` with one small frozen event; every
listener in :data:`LISTENERS` gets every event (``runtime.metrics`` counts them). The
transport knows nothing of who listens, and a listener that raises is logged and
cannot break the lane or the receive loop that told it. Log lines stay as they are,
for people; these are for code.

================  ===============  ==================================================
event             told by          when
================  ===============  ==================================================
``Extended``      a lane           extensions of ``count`` messages landed
``DeadLettered``  a lane           ``count`` messages were sent to the DLQ for ``reason``
``WorkFailed``    a lane           a background call (``work``: ``change``, ``move``,
                                   ``delete``, ``extend``) failed with ``code``,
                                   retried or not
``ReceiveFailed`` the receive loop a ReceiveMessage failed; ``kind`` is the kit's error
                                   class, else the AWS code, else the exception's class
================  ===============  ==================================================

``queue`` is the Celery queue name (``None`` when a lane was made for a URL whose
name it does not know).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extended:
    queue: str | None
    count: int


@dataclass(frozen=True)
class DeadLettered:
    queue: str | None
    count: int
    reason: str


@dataclass(frozen=True)
class WorkFailed:
    queue: str | None
    work: str
    code: str


@dataclass(frozen=True)
class ReceiveFailed:
    queue: str | None
    kind: str


Event = Extended | DeadLettered | WorkFailed | ReceiveFailed
Listener = Callable[[Event], None]

LISTENERS: list[Listener] = []
"""Called as ``listener(event)`` on the thread that did the work; keep them quick."""


def tell(event: Event) -> None:
    """Give ``event`` to every listener; one that raises is logged and skipped."""
    for listener in list(LISTENERS):
        try:
            listener(event)
        except Exception:  # a listener's bug must not stop the transport's work
            logger.exception("a transport event listener failed on %r", event)
