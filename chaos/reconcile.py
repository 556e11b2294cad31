"""Task by task: what was sent against what ran, and why anything ran twice.

Pure: it reads nothing and knows no clock. Inputs are the ids the publisher saw
accepted, the execution log's records (``start``/``done`` per execution, with the
worker incarnation and pid that ran it), the faults as they were applied, and the
DLQ's contents after the drain.

- ``completed``: sent tasks with at least one ``done``.
- ``lost``: sent tasks with no ``done`` (must be 0); where a lost task was found
  (the DLQ, or nowhere) is kept with it.
- ``duplicates``: executions beyond each task's first (a start, whether or not it
  finished: a task killed half-way and run again ran twice).
- A duplicate's cause, first that applies:

  1. ``<kind> (its worker)``: a fault stopped the previous execution's worker or
     pool process between that execution's start and the duplicate's (a ``kill9``
     or ``sigterm`` of that incarnation, a ``kill9_pool_process`` of that pid);
  2. ``<kind> (publish retried)``: SQS accepted the task more than once, because a
     fault (a reset, a stall) hit the answer to a publish that had landed and the
     publisher sent it again; one duplicate per such copy;
  3. ``<kind> (nearest before)``: the fault that started last before the duplicate,
     among those still in effect ``lookback`` seconds (the visibility timeout)
     before the previous execution started;
  4. ``unknown``.
- ``executed_unsent``: tasks that ran though their publish raised (SQS had them
  when the answer was lost): not lost, not sent, counted apart.
- Bad inputs (poison bodies, unknown task names) are never tasks: they are counted
  by kind as sent and as found in the DLQ.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaos.schedule import BAD_INPUT_KINDS


@dataclass(frozen=True)
class Execution:
    event: str  # "start" or "done"
    task_id: str
    worker: str  # slot and incarnation, "w2.1"
    pid: int
    at: float  # wall clock


@dataclass(frozen=True)
class AppliedFault:
    at: float  # wall clock
    kind: str
    target: str
    worker: str = ""  # the incarnation it stopped, for kill9 and sigterm
    pid: int = 0  # the pool process it killed
    label: str = ""
    until: float = 0.0  # wall clock when its effect ended (a burst, an outage); else ``at``

    @property
    def end(self) -> float:
        return max(self.at, self.until)


@dataclass(frozen=True)
class DeadLetter:
    id: str | None
    """A task message's task id; a poison body's own id (the run writes one in it);
    ``None`` if neither can be read."""
    reason: str  # the transport's kit_reason attribute


@dataclass(frozen=True)
class Duplicate:
    task_id: str
    executions: int
    workers: tuple[str, ...]
    causes: tuple[str, ...]  # one per execution beyond the first
    completed: int  # how many of its executions finished


@dataclass
class Reconciliation:
    sent: int = 0
    completed: int = 0
    lost: dict[str, str] = field(default_factory=dict)  # task id -> where it was found
    duplicates: int = 0
    duplicate_tasks: list[Duplicate] = field(default_factory=list)
    duplicates_by_cause: dict[str, int] = field(default_factory=dict)
    completed_twice: int = 0
    extra_copies: int = 0
    """Copies SQS accepted beyond one per task (publisher retries)."""
    executed_unsent: list[str] = field(default_factory=list)
    bad_inputs_sent: dict[str, int] = field(default_factory=dict)
    bad_inputs_in_dlq: dict[str, int] = field(default_factory=dict)
    bad_inputs_executed: list[str] = field(default_factory=list)

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / self.sent if self.sent else 0.0


STOPS_ITS_WORKER = ("kill9", "sigterm")


def stopped_by(previous: Execution, duplicate: Execution,
               faults: list[AppliedFault]) -> str | None:
    """The fault that stopped ``previous``'s worker or pool process before
    ``duplicate`` started, if one did: the kill of its very process first (a pool
    process killed and then its worker stopped lost the task to the first)."""
    between = [f for f in faults if previous.at <= f.at <= duplicate.at]
    for fault in between:
        if fault.kind == "kill9_pool_process" and fault.pid == previous.pid:
            return f"{fault.kind} (its worker)"
    for fault in between:
        if fault.kind in STOPS_ITS_WORKER and fault.worker == previous.worker:
            return f"{fault.kind} (its worker)"
    return None


def nearest_before(previous: Execution, duplicate: Execution,
                   faults: list[AppliedFault], lookback: float) -> str:
    """The fault that started last before ``duplicate``, among those in effect since
    ``lookback`` seconds before ``previous`` started."""
    for fault in reversed(faults):
        if fault.kind in BAD_INPUT_KINDS or fault.at > duplicate.at:
            continue
        if fault.end >= previous.at - lookback:
            return f"{fault.kind} (nearest before)"
    return "unknown"


def causes_of(starts: list[Execution], copies: list[str], faults: list[AppliedFault],
              lookback: float) -> tuple[str, ...]:
    """One cause per execution beyond the first (``starts`` ordered by time)."""
    pairs = list(zip(starts, starts[1:]))
    causes: list[str | None] = [stopped_by(a, b, faults) for a, b in pairs]
    # every copy but the last accepted one was answered by a fault and sent again
    retried = [f"{kind} (publish retried)" for kind in copies if kind][:len(copies) - 1]
    for i, cause in enumerate(causes):
        if cause is None and retried:
            causes[i] = retried.pop(0)
    return tuple(cause or nearest_before(a, b, faults, lookback)
                 for cause, (a, b) in zip(causes, pairs))


def reconcile(sent: Iterable[str], executions: Iterable[Execution],
              faults: Iterable[AppliedFault], dead_letters: Iterable[DeadLetter] = (),
              bad_inputs: dict[str, Iterable[str]] | None = None,
              copies: dict[str, list[str]] | None = None,
              lookback: float = 0.0) -> Reconciliation:
    """``bad_inputs`` maps each bad-input kind to the ids its messages carried;
    ``copies`` each task id to the fault that hit each of its publishes SQS accepted
    (``""`` for none); ``lookback`` is the visibility timeout."""
    sent_ids = set(sent)
    ordered_faults = sorted(faults, key=lambda f: f.at)
    runs: dict[str, list[Execution]] = defaultdict(list)
    done: Counter[str] = Counter()
    for e in executions:
        if e.event == "start":
            runs[e.task_id].append(e)
        elif e.event == "done":
            done[e.task_id] += 1
    letters = list(dead_letters)
    in_dlq = {d.id: d.reason for d in letters if d.id is not None}
    bad = {kind: set(ids) for kind, ids in (bad_inputs or {}).items()}
    bad_ids = set().union(*bad.values()) if bad else set()

    result = Reconciliation(sent=len(sent_ids))
    result.completed = sum(1 for t in sent_ids if done[t])
    result.lost = {t: (f"in the DLQ ({in_dlq[t]})" if t in in_dlq else
                       "started, never finished" if runs.get(t) else "never ran")
                   for t in sorted(sent_ids) if not done[t]}
    causes: Counter[str] = Counter()
    for task_id in sorted(runs):
        starts = sorted(runs[task_id], key=lambda e: e.at)
        if len(starts) < 2:
            continue
        why = causes_of(starts, (copies or {}).get(task_id, []), ordered_faults, lookback)
        causes.update(why)
        result.duplicate_tasks.append(Duplicate(task_id, len(starts),
                                                tuple(e.worker for e in starts), why,
                                                done[task_id]))
        result.duplicates += len(starts) - 1
        result.completed_twice += done[task_id] > 1
    result.duplicates_by_cause = dict(sorted(causes.items()))
    result.extra_copies = sum(max(len(c) - 1, 0) for c in (copies or {}).values())
    result.executed_unsent = sorted(t for t in runs
                                    if t not in sent_ids and t not in bad_ids)
    result.bad_inputs_sent = {kind: len(ids) for kind, ids in sorted(bad.items())}
    result.bad_inputs_in_dlq = {kind: len(ids & in_dlq.keys())
                                for kind, ids in sorted(bad.items())}
    result.bad_inputs_executed = sorted(t for t in runs if t in bad_ids)
    return result
