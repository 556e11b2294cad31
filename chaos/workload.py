"""What the chaos run publishes: a seeded, pure plan of tasks. Most are short; a few
run longer than the queue's visibility timeout (the transport's heartbeat must keep
them invisible, and a kill must bring them back); some carry a countdown (held by
the worker, invisible, until their ETA)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadConfig:
    tasks: int = 10_000
    short_seconds: float = 0.02
    """Short tasks sleep up to this long (uniform)."""
    long_fraction: float = 0.001
    long_seconds: float = 40.0
    """Longer than the chaos queue's visibility timeout (30 s)."""
    countdown_fraction: float = 0.02
    countdown_seconds: tuple[float, float] = (2.0, 8.0)


@dataclass(frozen=True)
class PlannedTask:
    id: str
    seconds: float
    countdown: float = 0.0

    @property
    def kind(self) -> str:
        return "countdown" if self.countdown else "long" if self.seconds >= 1 else "short"


def plan_tasks(seed: int, config: WorkloadConfig) -> tuple[PlannedTask, ...]:
    """The same tasks, in the same order, for the same seed and config. Ids are
    ``t00000``...: readable in logs, unique within a run (each run has a fresh queue)."""
    rng = random.Random(f"workload:{seed}")  # its own stream: the fault schedule's is apart
    width = max(5, len(str(config.tasks - 1)))
    planned = []
    for i in range(config.tasks):
        roll = rng.random()
        if roll < config.long_fraction:
            task = PlannedTask(f"t{i:0{width}d}", config.long_seconds)
        elif roll < config.long_fraction + config.countdown_fraction:
            task = PlannedTask(f"t{i:0{width}d}", round(rng.uniform(0, config.short_seconds), 4),
                               round(rng.uniform(*config.countdown_seconds), 1))
        else:
            task = PlannedTask(f"t{i:0{width}d}", round(rng.uniform(0, config.short_seconds), 4))
        planned.append(task)
    return tuple(planned)
