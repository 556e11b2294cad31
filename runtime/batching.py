"""One SQS ``*Batch`` call (DeleteMessageBatch, ChangeMessageVisibilityBatch) and
what became of each of its entries.

A batch call can fail whole (the request never got an answer) or entry by entry
(``Failed`` in the answer). Both are sorted the same way here, once, for every
caller: an entry is *done*, to *retry* (the whole call failed transiently, or
SQS says the fault was its own: ``SenderFault`` false), or *failed* for good with
its code (a stale receipt handle, access denied).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from runtime.sqs_errors import error_code, is_transient

BATCH_SIZE = 10
"""SQS's limit of entries in one batch request."""

T = TypeVar("T")


@dataclass
class BatchOutcome(Generic[T]):
    done: list[T] = field(default_factory=list)
    retry: list[T] = field(default_factory=list)
    failed: list[tuple[T, str]] = field(default_factory=list)
    error: BaseException | None = None
    """The exception that failed the whole call, if one did."""


def send_batch(call: Callable[..., dict[str, Any]], url: str, items: Sequence[T],
               entry: Callable[[T], dict[str, Any]]) -> BatchOutcome[T]:
    """``call(QueueUrl=url, Entries=[...])`` for at most 10 ``items``, each made into its
    entry by ``entry``; never raises."""
    if len(items) > BATCH_SIZE:
        raise ValueError(f"a batch holds at most {BATCH_SIZE} entries, got {len(items)}")
    entries = [{"Id": str(i), **entry(item)} for i, item in enumerate(items)]
    try:
        response = call(QueueUrl=url, Entries=entries)
    except Exception as error:  # every failure is sorted, none escapes a background thread
        if is_transient(error):
            return BatchOutcome(retry=list(items), error=error)
        return BatchOutcome(failed=[(item, error_code(error)) for item in items], error=error)
    outcome: BatchOutcome[T] = BatchOutcome()
    failures = {f["Id"]: f for f in response.get("Failed", [])}
    for i, item in enumerate(items):
        failure = failures.get(str(i))
        if failure is None:
            outcome.done.append(item)
        elif not failure.get("SenderFault", True):
            outcome.retry.append(item)
        else:
            outcome.failed.append((item, failure.get("Code", "unknown")))
    return outcome
