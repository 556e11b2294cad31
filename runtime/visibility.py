"""When a held message is extended, and by how much.

Stock kombu never extends visibility: a task that runs (or waits for its ETA,
or sits prefetched) longer than the queue's visibility timeout is handed to
another worker while the first still has it. Here every held message is
extended with ChangeMessageVisibilityBatch when half its visibility window is
left, by the queue's visibility timeout each time, until it has been held for
SQS's 12-hour maximum. The receive asks for that same visibility timeout, so
the first window is the one planned here whatever the queue's own attribute
says. This module only plans; ``runtime.lane`` sends.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HOLD_SECONDS = 43_200
"""SQS caps a message's total invisibility at 12 hours from its receipt."""


@dataclass
class Held:
    """A received message the worker has not finished with."""

    handle: str
    received_at: float
    visible_at: float
    done: bool = False
    """Acked or dead-lettered: kept invisible only until its delete lands."""
    extending: bool = True
    """False once SQS refused an extension or the 12-hour cap was reached."""


def extension_due_at(held: Held, visibility_timeout: int) -> float:
    """When to extend: half the window before the message would be visible again."""
    return held.visible_at - visibility_timeout / 2


def extension(held: Held, visibility_timeout: int, now: float) -> int:
    """Seconds of visibility to ask for now: the queue's timeout, within the 12-hour cap
    (0 once the cap is reached)."""
    left = MAX_HOLD_SECONDS - int(now - held.received_at) - 1
    return max(0, min(visibility_timeout, left))
