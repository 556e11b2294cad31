"""Scaling on backlog per worker, as plain data: the metric math and the target.

One worker (an ECS task, or an EC2 instance running one worker container) holds
at most ``concurrency x prefetch multiplier`` messages at once: the processes
(or threads) of its pool, each with its prefetched messages. So the fleet is the
right size when each worker has about that many messages to hold::

    backlog            = sum over the fleet's queues of
                         ApproximateNumberOfMessagesVisible + ApproximateNumberOfMessagesNotVisible
    backlog per worker = backlog / running workers
    target             = concurrency x prefetch multiplier (unless the spec sets one)

Target tracking then keeps ``backlog per worker`` near ``target``: it sets the
desired count to ``ceil(current x metric / target)``, which here is
``ceil(backlog / target)``, within min..max. It cannot leave zero: with no
worker running the quotient is undefined (no datapoint) and ``current x
anything`` is 0. A second expression, ``backlog if no worker runs, else 0``,
drives a step policy that sets the count to exactly 1 when it is above 0; once
that worker runs, target tracking takes over. Exactly 1, not +1: while the first
worker starts, the alarm stays on and re-applying "1" changes nothing.

This module imports no CDK: the expressions are strings over metric ids that
:mod:`infra.constructs.backlog_scaling` binds to CloudWatch metrics, and
:meth:`BacklogPlan.desired` is what a unit test checks against sample backlogs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WORKERS_ID = "workers"
"""Metric id of the running-workers metric in the expressions."""


def visible_id(index: int) -> str:
    """Metric id of queue ``index``'s ApproximateNumberOfMessagesVisible."""
    return f"visible{index}"


def in_flight_id(index: int) -> str:
    """Metric id of queue ``index``'s ApproximateNumberOfMessagesNotVisible."""
    return f"inflight{index}"


def target_backlog_per_worker(*, concurrency: int, prefetch_multiplier: int,
                              explicit: int | None = None) -> int:
    """The spec's value when set, else what one worker can hold at once."""
    return explicit if explicit is not None else concurrency * prefetch_multiplier


@dataclass(frozen=True)
class BacklogPlan:
    """How a fleet consuming ``queue_count`` queues scales: ``target`` messages of
    backlog per running worker, between ``min_capacity`` and ``max_capacity``."""

    queue_count: int
    target: int
    min_capacity: int
    max_capacity: int

    @property
    def backlog_expression(self) -> str:
        """Messages waiting or held, over every queue. A queue SQS reports nothing for
        (idle for hours) counts as empty, so one quiet queue cannot blank the sum."""
        return " + ".join(f"FILL({metric_id}, 0)" for i in range(self.queue_count)
                          for metric_id in (visible_id(i), in_flight_id(i)))

    @property
    def per_worker_expression(self) -> str:
        """What target tracking holds at ``target``; undefined with no worker running."""
        return f"({self.backlog_expression}) / {WORKERS_ID}"

    @property
    def idle_with_backlog_expression(self) -> str:
        """Above 0 only when work waits and no worker runs: the scale-from-zero alarm."""
        return f"IF(FILL({WORKERS_ID}, 0) == 0, {self.backlog_expression}, 0)"

    def desired(self, backlog: int, running: int) -> int:
        """The worker count the two policies settle on for a steady ``backlog`` with
        ``running`` workers: the step policy's 1 from zero, else target tracking's
        ``ceil(backlog / target)``; both within min..max."""
        if running == 0:
            wanted = 1 if backlog > 0 else 0
        else:
            # ceil(current x metric / target) with metric = backlog / running, current = running
            wanted = math.ceil(backlog / self.target)
        return max(self.min_capacity, min(self.max_capacity, wanted))
