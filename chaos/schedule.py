"""The fault schedule: a seeded, pure list of what to break, when and where.

``make_schedule(seed, config)`` depends on nothing but its arguments, so the same seed
and config give the same faults at the same offsets against the same targets, and
``digest`` names a schedule in a line (it is written to ``bench/chaos.json``). What a
fault does when applied is ``chaos.faults``' business; here each is only a record.

Kinds (``FAULT_KINDS``), and what ``target``, ``count``, ``seconds`` and ``code`` mean:

============================  ==========================================================
``kill9``                     SIGKILL a worker (main and pool processes) mid-task;
                              ``target`` its slot; a replacement starts at once
``sigterm``                   warm shutdown of a worker with prefetched, running and ETA
                              tasks; ``target`` its slot; a replacement starts at once
``kill9_pool_process``        SIGKILL one prefork pool process; ``target`` a prefork
                              slot, ``count`` which of its processes (modulo how many)
``connection_reset``          the next ``count`` requests of action ``target`` (within
                              ``within`` seconds, as for every network fault) reach SQS,
                              then their connection is reset, unanswered
``stall``                     the next ``count`` requests of ``target`` reach SQS and are
                              answered ``seconds`` late, past the client's read timeout
``http_5xx``                  the next ``count`` requests of ``target`` are answered with
                              ``code`` (500 InternalError or 503 ServiceUnavailable)
``throttle``                  the same with ``code`` ThrottlingException or RequestThrottled
``long_poll_hang``            the next ``count`` ReceiveMessage calls are never answered
``credentials_outage``        the container-credentials endpoint is down for ``seconds``
                              (longer than a token lives)
``poison_body``               ``count`` messages that are not kombu messages
``unknown_task``              ``count`` well-formed tasks of a name no worker knows
============================  ==========================================================
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field

from local_aws.counting_proxy import ANY

WORKER_KINDS = ("kill9", "sigterm", "kill9_pool_process")
NETWORK_KINDS = ("connection_reset", "stall", "http_5xx", "throttle", "long_poll_hang")
BAD_INPUT_KINDS = ("poison_body", "unknown_task")
FAULT_KINDS = (*WORKER_KINDS, *NETWORK_KINDS, "credentials_outage", *BAD_INPUT_KINDS)

RECEIVE = "ReceiveMessage"
WORKER_ACTIONS = (RECEIVE, "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
"""What workers ask SQS (moves to the DLQ aside)."""
STALL_ACTIONS = ("DeleteMessageBatch", "ChangeMessageVisibilityBatch", "SendMessageBatch", ANY)
"""Calls whose read timeout (10 s, the bundled transport's for everything but
receives, the publisher's batches included) a stall outlasts. A long poll's is its
wait + 15 s: ``long_poll_hang`` is its fault."""
ERROR_CODES = {"http_5xx": ((500, "InternalError"), (503, "ServiceUnavailable")),
               "throttle": ((400, "ThrottlingException"),
                            (400, "AWS.SimpleQueueService.RequestThrottled"))}


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the run's start."""
    kind: str
    target: str = ""
    count: int = 1
    seconds: float = 0.0
    code: str = ""
    status: int = 0
    within: float = 0.0
    """Network faults: only requests in the next ``within`` seconds are hit (a burst)."""

    def label(self) -> str:
        extra = [f"x{self.count}" if self.kind in (*NETWORK_KINDS, *BAD_INPUT_KINDS) else "",
                 f"{self.seconds:g}s" if self.seconds else "", self.code,
                 f"within {self.within:g}s" if self.within else ""]
        return " ".join(p for p in (f"{self.at:6.1f}s {self.kind}", self.target, *extra) if p)


def _default_counts() -> dict[str, int]:
    return {"kill9": 3, "sigterm": 3, "kill9_pool_process": 2, "connection_reset": 4,
            "stall": 3, "http_5xx": 4, "throttle": 4, "long_poll_hang": 2,
            "credentials_outage": 1, "poison_body": 2, "unknown_task": 2}


@dataclass(frozen=True)
class ScheduleConfig:
    window: float = 150.0
    """Faults start within [0, window) seconds of the run's start."""
    pools: tuple[str, ...] = ("prefork", "threads", "prefork")
    """The worker slots' pools, slot ``w1`` first."""
    counts: dict[str, int] = field(default_factory=_default_counts)
    """How many faults of each kind."""
    burst: tuple[int, int] = (5, 30)
    """Requests per network fault, at least and at most..."""
    burst_seconds: float = 15.0
    """...among those of the next this many seconds."""
    stall_seconds: float = 12.0
    """Past the workers' 10 s read timeout."""
    outage_seconds: float = 45.0
    """The credentials endpoint's outage: longer than a token's lifetime."""
    bad_inputs: tuple[int, int] = (1, 3)
    """Messages per bad-input fault, at least and at most."""

    def __post_init__(self) -> None:
        unknown = set(self.counts) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"counts names unknown fault kinds {sorted(unknown)}; "
                             f"known: {', '.join(FAULT_KINDS)}")
        if self.counts.get("credentials_outage", 0) and self.outage_seconds >= self.window:
            raise ValueError(f"outage_seconds must be < window ({self.window:g}), "
                             f"got {self.outage_seconds:g}")
        if self.counts.get("kill9_pool_process", 0) and "prefork" not in self.pools:
            raise ValueError("kill9_pool_process needs a prefork slot in pools, got "
                             f"{self.pools}")


def slot_names(pools: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"w{i}" for i in range(1, len(pools) + 1))


def _spread(rng: random.Random, options: tuple[str, ...], n: int) -> list[str]:
    """``n`` picks that visit every option before any repeats, in a seeded order: a
    kind's faults hit different targets whatever the seed."""
    picks: list[str] = []
    while len(picks) < n:
        picks += rng.sample(options, len(options))
    return picks[:n]


NETWORK_TARGETS = (*WORKER_ACTIONS, "SendMessageBatch", ANY)
"""The targets of resets and error bursts: the workers' calls, the publisher's, any."""


def make_schedule(seed: int, config: ScheduleConfig) -> tuple[Fault, ...]:
    """Every fault of the run, ordered by time; a pure function of its arguments."""
    rng = random.Random(f"faults:{seed}")
    slots = slot_names(config.pools)
    prefork = tuple(s for s, pool in zip(slots, config.pools) if pool == "prefork")
    faults = []
    # Kinds in a fixed order, each drawing from the one stream: same seed, same draws.
    for kind in FAULT_KINDS:
        n = config.counts.get(kind, 0)
        if kind in ("kill9", "sigterm"):
            targets = _spread(rng, slots, n)
        elif kind == "kill9_pool_process":
            targets = _spread(rng, prefork, n)
        elif kind in ("connection_reset", "http_5xx", "throttle"):
            targets = _spread(rng, NETWORK_TARGETS, n)
        elif kind == "stall":
            targets = _spread(rng, STALL_ACTIONS, n)
        elif kind == "long_poll_hang":
            targets = [RECEIVE] * n
        elif kind == "credentials_outage":
            targets = ["credentials-endpoint"] * n
        else:  # bad inputs
            targets = ["queue"] * n
        for target in targets:
            if kind == "credentials_outage":
                # whole outage inside the window, so the run also sees the recovery
                at = rng.uniform(0.1 * config.window, config.window - config.outage_seconds)
                faults.append(Fault(round(at, 1), kind, target, seconds=config.outage_seconds))
                continue
            at = round(rng.uniform(0, config.window), 1)
            if kind in ("kill9", "sigterm"):
                faults.append(Fault(at, kind, target))
            elif kind == "kill9_pool_process":
                faults.append(Fault(at, kind, target, count=rng.randrange(8)))
            elif kind in ("connection_reset", "http_5xx", "throttle"):
                count = rng.randint(*config.burst)
                status, code = rng.choice(ERROR_CODES[kind]) if kind in ERROR_CODES else (0, "")
                faults.append(Fault(at, kind, target, count, code=code, status=status,
                                    within=config.burst_seconds))
            elif kind == "stall":
                faults.append(Fault(at, kind, target, rng.randint(1, config.burst[0]),
                                    config.stall_seconds, within=config.burst_seconds))
            elif kind == "long_poll_hang":
                faults.append(Fault(at, kind, target, rng.randint(1, len(slots)),
                                    within=config.burst_seconds))
            else:  # bad inputs
                faults.append(Fault(at, kind, target, rng.randint(*config.bad_inputs)))
    return tuple(sorted(faults, key=lambda f: (f.at, FAULT_KINDS.index(f.kind), f.target)))


def digest(schedule: tuple[Fault, ...]) -> str:
    """A short name for a schedule: equal digests, equal schedules."""
    text = json.dumps([asdict(f) for f in schedule], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
