"""When a held message is extended, and by how much.

Stock kombu never extends visibility: a task that runs (or waits for its ETA,
or sits prefetched) longer than the queue's visibility timeout is handed to
another worker while the first still has it. Here every held message is
extended with ChangeMessageVisibilityBatch when half its visibility window is
left, by the queue's visibility timeout each time, until it has been held for
SQS's 12-hour maximum (less ``CAP_MARGIN``, for the gap between SQS's receipt
and the lane's clock). The receive asks for that same visibility timeout, so
the first window is the one planned here whatever the queue's own attribute
says.

A task whose ETA is further away than the 12-hour cap cannot be held until it
is due. Celery sets no DelaySeconds, so such a message is *parked* instead: when
its ETA is more than ``eta_hold_limit`` away, it is sent to its queue again,
delayed by what is beyond the limit (at most SQS's 15 minutes), and the copy
received is deleted; it is held only once its ETA is within the limit.

This module only plans; ``runtime.lane`` sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

MAX_HOLD_SECONDS = 43_200
"""SQS caps a message's total invisibility at 12 hours from its receipt."""
CAP_MARGIN = 60
"""Seconds the last extension stops short of the cap as the lane counts it. SQS counts
from its receipt, which comes before the lane's hold by the answer's time in transit
and its wait to be accepted (seconds on a busy worker), and refuses an extension that
would pass the cap: the message would then reappear a whole window early."""
MAX_DELAY_SECONDS = 900
"""SQS's longest DelaySeconds: a parked message comes back at least every 15 minutes."""
ETA_RUN_MARGIN = 3_600
"""What the 12-hour cap leaves a task held for ``eta_hold_limit``: an hour to run and
be deleted."""
MAX_ETA_HOLD_LIMIT = MAX_HOLD_SECONDS - ETA_RUN_MARGIN
"""The longest, and the default, ``eta_hold_limit``: 11 hours."""


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
    """Seconds of visibility to ask for now: the queue's timeout, ending at least
    ``CAP_MARGIN`` before the 12-hour cap (0 once that is reached)."""
    left = MAX_HOLD_SECONDS - CAP_MARGIN - math.ceil(now - held.received_at)
    return max(0, min(visibility_timeout, left))


def eta_of(headers: Mapping[str, Any]) -> datetime | None:
    """The ETA of a Celery (protocol 2) task message from its headers, timezone-aware;
    ``None`` without one, or when it does not parse (Celery then says why). A naive
    ETA is taken as UTC, as Celery does with ``enable_utc`` (its default)."""
    return time_header(headers, "eta")


def time_header(headers: Mapping[str, Any], name: str) -> datetime | None:
    """A time header of a Celery task message (``eta``, ``expires``): ISO 8601 text, as
    Celery writes it, or a datetime kombu's JSON decoded; timezone-aware, naive taken as
    UTC; ``None`` when absent or unparsable."""
    value = headers.get(name)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def park_delay(eta: datetime | None, now: datetime, hold_limit: int) -> int:
    """DelaySeconds to park a message whose task is due at ``eta``, or 0 to deliver it
    now: parked while the ETA is more than ``hold_limit`` seconds away, for what is
    beyond the limit (rounded up, so it comes back within the limit) and at most 15
    minutes, then delivered and held for the rest."""
    if eta is None:
        return 0
    beyond = (eta - now).total_seconds() - hold_limit
    return 0 if beyond <= 0 else min(MAX_DELAY_SECONDS, math.ceil(beyond))
