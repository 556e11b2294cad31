"""``dlq peek QUEUE``: the dead letters, read without consuming them.

SQS has no "peek": reading a message means receiving it, which hides it for the
visibility timeout given. A receive with ``VisibilityTimeout=0`` looks harmless
but is not: the message is visible again at once, so the next receive of this
command returns the same messages over again, and another consumer (a running
redrive) may take it mid-peek. Instead the peek receives with a short timeout
(:data:`HOLD`), keeps what it has received hidden while it reads on (so each
receive returns new messages, and a FIFO group's head does not come back), then
makes all of them visible again at once (ChangeMessageVisibilityBatch to 0),
also when interrupted. Killed with SIGKILL, it leaves them hidden for at most
:data:`HOLD` seconds. Each peek adds one to a message's ApproximateReceiveCount.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from runtime.batching import BATCH_SIZE, send_batch
from runtime.config import WorkerConfig
from runtime.ops import queues
from runtime.ops.arguments import positive_int
from runtime.ops.aws import Aws, call
from runtime.ops.messages import DeadLetter, describe
from runtime.ops.output import duration, note, print_json, table

HOLD = 30
"""Seconds a peeked message stays hidden if this command dies before giving it back."""
RECEIVE_WAIT = 1
"""Long polling asks every SQS server, so a receive that finds nothing means the queue has
nothing visible; it returns at once when there are messages."""

HELP = "show dead letters (reason, source queue, task) without consuming them"
DESCRIPTION = f"""\
Shows up to --max dead letters of QUEUE's DLQ (QUEUE: a queue of the config, or its
DLQ's name) with why they died (kit_reason), the queue they came from
(kit_source_queue), and the Celery task name and id from the message body.

Nothing is consumed. The messages are received with a {HOLD} s visibility timeout,
kept hidden while the peek reads on (so it never shows one twice), then made visible
again at once with ChangeMessageVisibilityBatch, also on Ctrl-C; if the command is
killed they reappear within {HOLD} s. Not VisibilityTimeout=0: that makes each
message visible again immediately, so the peek would read the same messages over
again and a concurrent redrive could take them mid-peek. Each peek adds one to a
message's ApproximateReceiveCount.

exit status: 0 shown (also when the DLQ is empty); 2 usage or config error; 3 AWS
error (the line on stderr names what to fix)."""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("peek", parents=[common], help=HELP, description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queue", metavar="QUEUE", help="a queue of the config, or its DLQ")
    parser.add_argument("--max", type=positive_int, default=10, metavar="N",
                        help="show at most N dead letters (default: 10)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: WorkerConfig) -> int:
    queue, dlq = queues.with_dead_letters(config, args.queue)
    letters = [describe(m) for m in peek(Aws(config), dlq.url, args.max)]
    if args.json:
        print_json({"queue": queue.name, "dead_letter_queue": dlq.url,
                    "dead_letters": [letter.as_json() for letter in letters]})
    else:
        print(f"{queues.name_of(dlq.url)}: {len(letters)} dead letter"
              f"{'' if len(letters) == 1 else 's'} shown (none consumed)")
        if letters:
            print(rows(letters))
    return 0


def rows(letters: list[DeadLetter]) -> str:
    now = time.time()
    return table(["MESSAGE", "AGE", "RECEIVES", "REASON", "SOURCE", "TASK", "TASK ID"],
                 [[letter.message_id,
                   duration(None if letter.sent_at is None else now - letter.sent_at),
                   letter.receive_count, letter.reason, letter.source_queue,
                   letter.task or f"? ({letter.note})", letter.task_id]
                  for letter in letters])


def peek(aws: Aws, url: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` messages of the queue at ``url``, all visible again on return."""
    sqs = aws.client("sqs")
    label = queues.name_of(url)
    held: list[dict[str, Any]] = []
    handles: list[str] = []
    seen: set[str] = set()
    try:
        while len(held) < limit:
            batch = call(label, "ReceiveMessage", sqs.receive_message, QueueUrl=url,
                         MaxNumberOfMessages=min(BATCH_SIZE, limit - len(held)),
                         VisibilityTimeout=HOLD, WaitTimeSeconds=RECEIVE_WAIT,
                         MessageSystemAttributeNames=["All"],
                         MessageAttributeNames=["All"]).get("Messages", [])
            if not batch:
                break
            for message in batch:
                handles.append(message["ReceiptHandle"])
                if message["MessageId"] not in seen:  # a standard queue's rare second copy
                    seen.add(message["MessageId"])
                    held.append(message)
    finally:
        give_back(sqs, url, handles)
    return held


def give_back(sqs: Any, url: str, handles: list[str]) -> None:
    """Make received messages visible now; what SQS refuses reappears after :data:`HOLD`."""
    refused = []
    for start in range(0, len(handles), BATCH_SIZE):
        outcome = send_batch(sqs.change_message_visibility_batch, url,
                             handles[start:start + BATCH_SIZE],
                             lambda handle: {"ReceiptHandle": handle, "VisibilityTimeout": 0})
        refused += [code for _handle, code in outcome.failed]
        refused += ["retryable" for _handle in outcome.retry]
    if refused:
        note(f"{len(refused)} peeked message(s) could not be made visible again "
             f"({', '.join(sorted(set(refused)))}): they reappear within {HOLD} s")
