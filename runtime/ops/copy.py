"""Redrive by copy: receive a dead letter, send a copy to its source queue, delete it.

For endpoints without StartMessageMoveTask (emulators), and for ``--count``. The
promise: killed at any point (SIGKILL, a lost machine) and run again, no dead
letter is lost and none reaches its source queue twice. How:

**Nothing is lost: send, then delete.** A dead letter leaves the DLQ only after
SQS has accepted its copy. Killed before the delete, it is still in the DLQ.

**Nothing is sent twice: a journal** (:mod:`runtime.ops.journal`, one per DLQ,
locked). Before each SendMessage the journal records ``sending`` for the dead
letter's DLQ MessageId, after it ``sent``, both fsynced, then the delete, then
``deleted``. A rerun (on the same machine, or with the same ``--journal``) reads
it first: received-but-unsent messages are made visible again at once (no wait
for their visibility timeout), ``sent`` ones are deleted without being sent
again, wherever they turn up. The journal is removed when a run ends with
nothing left unsettled.

**The one window no client can close** is a kill while a SendMessage is on the
wire: ``sending`` is on disk, and whether SQS stored the copy is unknowable
(nothing can look a message up in a queue its workers consume). What happens to
such a dead letter on the rerun:

- FIFO source queue: each copy carries ``MessageDeduplicationId =
  kit-redrive-<DLQ MessageId>``, the same on every attempt, so within SQS's
  5-minute deduplication interval a resend is stored at most once: resent.
  (Not the original deduplication id: a message that failed quickly could still
  be inside the interval of its first send, and SQS would silently drop the copy.)
- Standard queue, or a FIFO one after the interval: by default (``--uncertain
  keep``) it stays in the DLQ, listed with its task id, and the command exits 1.
  Nothing lost, nothing doubled; the operator, who can check whether the task
  ran, reruns with ``--uncertain resend`` (send it again) or ``--uncertain
  delete`` (its copy did arrive).

The same holds for a send that fails in this run: one SQS refused (a 4xx answer,
or no connection made) is known unsent, and is retried (throttling) or reported;
one whose answer was lost (a timeout, a reset connection) is uncertain, as above.
Sends to a standard queue therefore go through a client without botocore's
retries (its retry of a timed-out SendMessage is itself a source of duplicates);
FIFO sends are retried under their deduplication id.

Assumptions: one redrive per DLQ at a time (the journal's lock enforces it on
one machine); and each message is deleted within the visibility timeout it was
received with (:func:`hold_for`: 10 s plus the time the rate allows for the
batch), so no other consumer can receive it in between.

What a copy carries: the body unchanged, every message attribute but
``kit_reason`` and ``kit_source_queue``, and on FIFO queues its MessageGroupId
(order within a group is kept: a group's messages are received and sent in
order). Its destination is always the queue whose DLQ this is, from the
configuration, never from the message: ``kit_source_queue`` is an attribute any
sender can set, and whoever may write to a DLQ (the workers that consume its
queue, for their DLQ moves) would otherwise inject into any queue of the
configuration, a consume-only one included. A dead letter whose
``kit_source_queue`` names another queue is reported (``misdirected``) and left in
the DLQ for the operator to inspect (``dlq peek``) and delete; it is not sent
anywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as NoConnection

from runtime.batching import BATCH_SIZE
from runtime.config import DeadLetterConfig, QueueConfig
from runtime.errors import KitError
from runtime.lane import REASON_ATTRIBUTE, SOURCE_ATTRIBUTE
from runtime.ops import journal as states
from runtime.ops import queues
from runtime.ops.aws import AWS_FAILURES, Aws, call, failure
from runtime.ops.journal import Journal
from runtime.ops.messages import DeadLetter, describe
from runtime.ops.output import Progress
from runtime.sqs_errors import is_transient

DEDUPLICATION_INTERVAL = 300
"""SQS keeps a FIFO queue's deduplication ids this many seconds."""
DEDUPLICATION_MARGIN = 30
HOLD_MARGIN = 10
RECEIVE_WAIT = 1
SEND_ATTEMPTS = 5
KEEP, RESEND, DELETE = "keep", "resend", "delete"


def hold_for(messages: int, rate: float) -> int:
    """The visibility timeout to receive ``messages`` with, at ``rate`` per second."""
    return HOLD_MARGIN + math.ceil(messages / rate)


def names_another_queue(message: Mapping[str, Any], owner: QueueConfig) -> bool:
    """Whether the dead letter's ``kit_source_queue`` names a queue other than ``owner``
    (the queue whose DLQ it is in): not a dead letter of ``owner``'s, so never redriven."""
    named = (message.get("MessageAttributes") or {}).get(SOURCE_ATTRIBUTE, {}).get("StringValue")
    return named is not None and named != owner.name


def copy_request(message: Mapping[str, Any], to: QueueConfig) -> dict[str, Any]:
    """The SendMessage request that puts a dead letter back on queue ``to``."""
    attributes = {name: {k: v for k, v in value.items()
                         if k in ("DataType", "StringValue", "BinaryValue")}
                  for name, value in (message.get("MessageAttributes") or {}).items()
                  if name not in (REASON_ATTRIBUTE, SOURCE_ATTRIBUTE)}
    request: dict[str, Any] = {"QueueUrl": to.url, "MessageBody": message["Body"]}
    if attributes:
        request["MessageAttributes"] = attributes
    if to.fifo:
        request["MessageGroupId"] = (message.get("Attributes") or {}).get(
            "MessageGroupId", "kit-redrive")
        request["MessageDeduplicationId"] = f"kit-redrive-{message['MessageId']}"
    return request


def known_unsent(error: BaseException) -> bool:
    """Whether a failed SendMessage certainly stored nothing: SQS answered 4xx (throttled
    or refused), or no connection was made. Anything else may have been stored."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return 400 <= status < 500
    return isinstance(error, NoConnection)


class Pacer:
    """At most ``rate`` calls of :meth:`wait` return per second, evenly spaced."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval, self.clock, self.sleep = 1 / rate, clock, sleep
        self._next = clock()

    def wait(self) -> None:
        now = self.clock()
        if self._next > now:
            self.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval


@dataclass
class Outcome:
    moved: int = 0
    """Sent and deleted by this run."""
    finished: int = 0
    """Sent by an interrupted run (or resent under the same FIFO deduplication id), and
    deleted by this one: never sent twice."""
    uncertain: list[DeadLetter] = field(default_factory=list)
    """Kept in the DLQ: a send of theirs may or may not have reached SQS."""
    resent: list[DeadLetter] = field(default_factory=list)
    """Uncertain ones sent again (``--uncertain resend``)."""
    dropped: list[DeadLetter] = field(default_factory=list)
    """Uncertain ones deleted unsent (``--uncertain delete``)."""
    misdirected: list[DeadLetter] = field(default_factory=list)
    """Kept in the DLQ, sent nowhere: their ``kit_source_queue`` names another queue."""
    left: int = 0
    """Messages still in the DLQ at the end (visible or hidden), approximately."""


class CopyRedrive:
    """One run over ``owner``'s DLQ ``dlq``; :meth:`run` once."""

    def __init__(self, aws: Aws, owner: QueueConfig, dlq: DeadLetterConfig,
                 journal: Journal, *, rate: float, count: int | None, uncertain: str,
                 progress: Progress) -> None:
        self.aws, self.owner, self.journal = aws, owner, journal
        self.dlq_url = dlq.url
        self.label = queues.name_of(self.dlq_url)
        self.rate, self.count, self.policy = rate, count, uncertain
        self.progress = progress
        self.outcome = Outcome()
        self._kept: dict[str, dict[str, Any]] = {}  # uncertain, hidden until the end
        self._pacer = Pacer(rate)

    def run(self) -> Outcome:
        drained = False
        try:
            self._reconcile()
            drained = self._loop()
        finally:
            self._give_back_kept()
        depth = queues.depth(self.aws, self.dlq_url)
        self.outcome.left = depth.visible + depth.in_flight
        resolved = not self.journal.unresolved() and not self._kept
        self.journal.close(remove=not self.outcome.uncertain and (drained or resolved))
        return self.outcome

    # a rerun first settles what the journal says an interrupted run left ---------------
    def _reconcile(self) -> None:
        """Best effort: whatever fails here is met again in the loop (the journal says what
        each message needs), or reappears when its hold ends."""
        sqs = self.aws.client("sqs")
        for entry in list(self.journal.entries.values()):
            if entry.handle is None:
                continue
            try:
                if entry.state in (states.RECEIVED, states.SENDING):  # visible again now
                    sqs.change_message_visibility(QueueUrl=self.dlq_url,
                                                  ReceiptHandle=entry.handle, VisibilityTimeout=0)
                elif entry.state == states.SENT:
                    self._delete(entry.id, entry.handle)
                    self.outcome.finished += 1
                    self._advance()
            except (KitError, *AWS_FAILURES):
                continue

    # the loop ---------------------------------------------------------------------------
    def _loop(self) -> bool:
        """Move dead letters until ``count`` or the DLQ is drained (``True``), or until
        nothing new has come for longer than a hold (``False``: hidden by another)."""
        idle_since: float | None = None
        while self.count is None or self.outcome.moved < self.count:
            want = BATCH_SIZE if self.count is None else min(BATCH_SIZE,
                                                            self.count - self.outcome.moved)
            hold = hold_for(want, self.rate)
            batch = self._receive(want, hold)
            fresh = []
            for message in batch:
                if message["MessageId"] in self._kept:
                    self._kept[message["MessageId"]] = message  # its newest receipt handle
                else:
                    fresh.append(message)
            if not fresh:
                depth = queues.depth(self.aws, self.dlq_url)
                if depth.visible == 0 and depth.in_flight <= len(self._kept):
                    return True
                idle_since = idle_since if idle_since is not None else time.monotonic()
                if time.monotonic() - idle_since > hold + HOLD_MARGIN:
                    return False
                continue
            idle_since = None
            for message in fresh:
                self._handle(message)
        return False

    def _receive(self, want: int, hold: int) -> list[dict[str, Any]]:
        sqs = self.aws.client("sqs")
        batch = call(self.label, "ReceiveMessage", sqs.receive_message, QueueUrl=self.dlq_url,
                     MaxNumberOfMessages=want, VisibilityTimeout=hold,
                     WaitTimeSeconds=RECEIVE_WAIT, MessageSystemAttributeNames=["All"],
                     MessageAttributeNames=["All"]).get("Messages", [])
        now = time.time()
        if batch:
            self.journal.record([{"id": m["MessageId"], "state": states.RECEIVED, "at": now,
                                  "handle": m["ReceiptHandle"]} for m in batch], sync=False)
        return batch

    def _handle(self, message: dict[str, Any]) -> None:
        entry = self.journal.entries[message["MessageId"]]
        if names_another_queue(message, self.owner):
            # Hidden until the end like an uncertain one, so the loop does not meet it again.
            self._kept[message["MessageId"]] = message
            self.outcome.misdirected.append(describe(message))
        elif entry.state in (states.SENT, states.DELETED):  # its copy went out before
            self._delete(message["MessageId"], message["ReceiptHandle"])
            self.outcome.finished += 1
        elif entry.state == states.SENDING:  # killed while its send was on the wire
            self._settle(message, entry.at)
        elif self._send(message):
            self._delete(message["MessageId"], message["ReceiptHandle"])
            self.outcome.moved += 1
        self._advance()

    def _settle(self, message: dict[str, Any], sending_at: float) -> None:
        deduplicated = self.owner.fifo and time.time() - sending_at < (DEDUPLICATION_INTERVAL
                                                                - DEDUPLICATION_MARGIN)
        if deduplicated or self.policy == RESEND:
            if self._send(message):
                self._delete(message["MessageId"], message["ReceiptHandle"])
                if deduplicated:
                    self.outcome.finished += 1
                else:
                    self.outcome.resent.append(describe(message))
        elif self.policy == DELETE:
            self._delete(message["MessageId"], message["ReceiptHandle"])
            self.outcome.dropped.append(describe(message))
        else:
            self._keep(message)

    def _send(self, message: dict[str, Any]) -> bool:
        """Send the copy, journaled; ``False`` when whether SQS stored it is unknowable (the
        dead letter is then kept). Raises when SQS refuses it for good."""
        to = self.owner
        request = copy_request(message, to)
        message_id = message["MessageId"]
        sqs = self.aws.client("sqs") if to.fifo else self.aws.once("sqs")
        attempt = 0
        while True:
            attempt += 1
            self._pacer.wait()
            self.journal.mark(message_id, states.SENDING, time.time(), sync=True)
            try:
                sqs.send_message(**request)
            except AWS_FAILURES as error:
                if known_unsent(error):
                    self.journal.mark(message_id, states.UNSENT, time.time(), sync=True)
                    retry = is_transient(error)
                elif to.fifo:
                    retry = True  # under the same deduplication id: stored at most once
                else:
                    self._keep(message)
                    return False
                if not retry or attempt == SEND_ATTEMPTS:
                    raise failure(error, queue=to.name, action="SendMessage") from None
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
                continue
            self.journal.mark(message_id, states.SENT, time.time(), sync=True)
            return True

    def _delete(self, message_id: str, handle: str) -> None:
        call(self.label, "DeleteMessage", self.aws.client("sqs").delete_message,
             QueueUrl=self.dlq_url, ReceiptHandle=handle)
        self.journal.mark(message_id, states.DELETED, time.time(), sync=False)

    def _keep(self, message: dict[str, Any]) -> None:
        self._kept[message["MessageId"]] = message
        self.outcome.uncertain.append(describe(message))

    def _give_back_kept(self) -> None:
        """Kept messages were held so the loop would not receive them again: release them
        (best effort: one SQS refuses reappears when its hold ends)."""
        sqs = self.aws.client("sqs")
        for message in self._kept.values():
            try:
                sqs.change_message_visibility(QueueUrl=self.dlq_url,
                                              ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
            except AWS_FAILURES:
                continue

    def _advance(self) -> None:
        self.progress.set(self.outcome.moved + self.outcome.finished + len(self.outcome.uncertain)
                          + len(self.outcome.dropped) + len(self.outcome.resent)
                          + len(self.outcome.misdirected))
