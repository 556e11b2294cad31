"""``dlq redrive QUEUE``: dead letters back to the queue they came from.

Two ways (:mod:`runtime.ops.move_task`, :mod:`runtime.ops.copy`, whose
docstring explains how a copy survives a kill without losing or doubling a
message); ``--method auto`` takes SQS's move task where the endpoint offers it
and copies elsewhere, or when ``--count`` asks for part of the DLQ.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runtime.config import DeadLetterConfig, QueueConfig, WorkerConfig
from runtime.errors import UsageError
from runtime.ops import copy, journal, move_task, queues
from runtime.ops.arguments import positive_float, positive_int
from runtime.ops.aws import Aws
from runtime.ops.output import Progress, duration, note, print_json, progress_wanted, table

DEFAULT_COPY_RATE = 50.0

HELP = "move dead letters back to their source queue (exactly once, resumable)"
DESCRIPTION = f"""\
Moves the dead letters of QUEUE's DLQ back to the queue they came from.

methods (--method):
  move-task  SQS's StartMessageMoveTask: server-side, continues if this command is
             interrupted (a rerun watches the running task); messages keep all their
             attributes. Moves the whole DLQ to the config's queue.
  copy       receive, send a copy to the queue whose DLQ this is (from the config,
             never from a message attribute; kit_reason and kit_source_queue removed,
             other attributes, FIFO MessageGroupId and order kept), then delete; at
             --rate messages/s (default {DEFAULT_COPY_RATE:g}). A dead letter whose
             kit_source_queue names another queue is listed as misdirected and left
             in the DLQ (exit status 1): anyone who may send to a DLQ could set it.
  auto       (default) move-task where the endpoint offers it, else copy; copy when
             --count is given.

Interrupted (Ctrl-C, SIGKILL, a lost connection), a copy loses nothing and sends
nothing twice: each dead letter is deleted only after SQS accepted its copy, and a
journal (--journal, fsynced before and after every send) tells the rerun which ones
were sent already. Run the same command again to resume. The one case no client can
settle is a kill while a send was on the wire: FIFO copies carry a fixed
deduplication id, so a rerun within 5 minutes resends them safely; otherwise the dead
letter is kept in the DLQ and listed (exit status 1), and --uncertain resend (send it
again) or --uncertain delete (its copy arrived) settles it.

exit status: 0 done; 1 dead letters kept as uncertain or misdirected, or hidden by
another consumer until the end; 2 usage or config error (also: another redrive holds the journal); 3
AWS error (the line on stderr names what to fix; a rerun resumes)."""


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("redrive", parents=[common], help=HELP,
                                 description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queue", metavar="QUEUE", help="a queue of the config, or its DLQ")
    parser.add_argument("--method", choices=("auto", "move-task", "copy"), default="auto",
                        help="how to move them (default: auto)")
    parser.add_argument("--rate", type=positive_float, metavar="R",
                        help=f"messages per second (copy: default {DEFAULT_COPY_RATE:g}; "
                             f"move-task: at most {move_task.MAX_RATE}, default SQS's choice)")
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help="move at most N dead letters (copy only)")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would be moved, where and how; move nothing")
    parser.add_argument("--uncertain", choices=(copy.KEEP, copy.RESEND, copy.DELETE),
                        default=copy.KEEP,
                        help="dead letters whose copy may have been sent when a run was "
                             "killed: keep them in the DLQ (default), resend, or delete")
    parser.add_argument("--journal", type=Path, metavar="PATH",
                        help="the copy's journal (default: one per DLQ under "
                             "$XDG_STATE_HOME/celery-sqs-kit/redrive)")
    parser.add_argument("--progress", action="store_true",
                        help="draw the progress bar even when stderr is not a terminal")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: WorkerConfig) -> int:
    owner, dlq = queues.with_dead_letters(config, args.queue)
    if args.method == "move-task" and args.count is not None:
        raise UsageError("--count needs --method copy: a move task moves the whole DLQ")
    if args.method == "move-task" and args.rate is not None and args.rate > move_task.MAX_RATE:
        raise UsageError(f"--rate must be at most {move_task.MAX_RATE} for a move task, "
                         f"got {args.rate:g}")
    aws = Aws(config)
    label = queues.name_of(dlq.url)
    method, running, why = _choose(aws, args, label, dlq.arn)
    depth = queues.depth(aws, dlq.url)
    total = depth.visible + depth.in_flight
    if args.count is not None:
        total = min(total, args.count)
    if args.dry_run:
        return _dry_run(args, owner, label, method, why, depth, total)
    progress = Progress(f"redrive {label}", total or None,
                        enabled=progress_wanted(args.progress))
    try:
        if method == "move-task":
            return _move(args, aws, owner, dlq, running, progress)
        return _copy(args, aws, owner, dlq, progress)
    finally:
        progress.close()


def _choose(aws: Aws, args: argparse.Namespace, label: str,
            dlq_arn: str) -> tuple[str, dict[str, Any] | None, str]:
    """(method, the move task already running, why this method)."""
    if args.method == "copy":
        return "copy", None, "asked for"
    if args.method == "auto" and args.count is not None:
        return "copy", None, "--count moves part of the DLQ, which a move task cannot"
    offered, running = move_task.running_task(aws, label, dlq_arn)
    if offered:
        return "move-task", running, "the endpoint offers StartMessageMoveTask"
    if args.method == "move-task":
        raise UsageError("this endpoint does not offer StartMessageMoveTask "
                         "(ListMessageMoveTasks is unknown to it): use --method copy")
    return "copy", None, "the endpoint does not offer StartMessageMoveTask"


def _dry_run(args: argparse.Namespace, owner: QueueConfig, label: str, method: str, why: str,
             depth: queues.Depth, total: int) -> int:
    rate = args.rate or (DEFAULT_COPY_RATE if method == "copy" else None)
    plan = {"dry_run": True, "dead_letter_queue": label, "queue": owner.name,
            "method": method, "why": why, "rate": rate, "visible": depth.visible,
            "in_flight": depth.in_flight, "would_move": total,
            "estimate_seconds": round(total / rate, 1) if rate else None}
    if args.json:
        print_json(plan)
        return 0
    pace = f"at {rate:g} msg/s" if rate else "at the rate SQS chooses"
    print(f"dry run: would move {total} dead letter{'' if total == 1 else 's'} from {label} "
          f"to {owner.name} by {method} {pace} ({why})")
    print(f"{label}: {depth.visible} visible, {depth.in_flight} in flight"
          + (f"; about {duration(plan['estimate_seconds'])}" if rate else ""))
    if method == "copy":
        print(f"each goes to {owner.name}, except those whose kit_source_queue names another "
              f"queue (kept, listed); see them with: python -m runtime.ops dlq peek "
              f"{owner.name}")
    return 0


def _move(args: argparse.Namespace, aws: Aws, owner: QueueConfig, dlq: DeadLetterConfig,
          running: dict[str, Any] | None, progress: Progress) -> int:
    label = queues.name_of(dlq.url)
    handle = running["TaskHandle"] if running else move_task.start(aws, label, dlq.arn,
                                                                     owner.arn, args.rate)
    try:
        task = move_task.watch(aws, label, dlq.arn, progress)
    except KeyboardInterrupt:
        progress.close()
        note(f"the move task goes on in SQS (task handle {handle}): run the same command to "
             "watch it, or stop it with aws sqs cancel-message-move-task --task-handle ...")
        raise
    result = {"dead_letter_queue": label, "queue": owner.name, "method": "move-task",
              "resumed_running_task": running is not None, "task_handle": handle,
              "status": task.get("Status"),
              "moved": task.get("ApproximateNumberOfMessagesMoved")}
    if args.json:
        print_json(result)
    else:
        progress.close()
        print(f"redrive {label} -> {owner.name}: move task {task.get('Status', '').lower()}, "
              f"{result['moved']} moved")
    return 0


def _copy(args: argparse.Namespace, aws: Aws, owner: QueueConfig, dlq: DeadLetterConfig,
          progress: Progress) -> int:
    label = queues.name_of(dlq.url)
    rate = args.rate or DEFAULT_COPY_RATE
    path = args.journal or journal.default_path(dlq.url)
    book = journal.Journal(path)
    resumed = book.resumed
    outcome = copy.CopyRedrive(aws, owner, dlq, book, rate=rate, count=args.count,
                               uncertain=args.uncertain, progress=progress).run()
    kept = outcome.uncertain
    journal_state = "kept" if path.exists() else "removed"
    result = {"dead_letter_queue": label, "queue": owner.name, "method": "copy", "rate": rate,
              "resumed": resumed, "moved": outcome.moved,
              "finished_from_interrupted_run": outcome.finished,
              "uncertain_kept": [d.as_json() for d in kept],
              "uncertain_resent": [d.as_json() for d in outcome.resent],
              "uncertain_deleted": [d.as_json() for d in outcome.dropped],
              "misdirected_kept": [d.as_json() for d in outcome.misdirected],
              "left_in_dead_letter_queue": outcome.left,
              "journal": str(path), "journal_state": journal_state}
    if args.json:
        print_json(result)
    else:
        progress.close()
        print(f"redrive {label} -> {owner.name}: copy at {rate:g} msg/s"
              + (" (resumed an interrupted run)" if resumed else ""))
        print(f"moved {outcome.moved}; finished from an interrupted run {outcome.finished}; "
              f"uncertain kept {len(kept)}, resent {len(outcome.resent)}, "
              f"deleted {len(outcome.dropped)}")
        print(f"{label}: {outcome.left} left; journal {journal_state}: {path}")
        if kept:
            print(table(["KEPT MESSAGE", "TASK", "TASK ID"],
                        [[d.message_id, d.task, d.task_id] for d in kept]))
        if outcome.misdirected:
            print(table(["MISDIRECTED MESSAGE", "TASK", "TASK ID", "NAMES QUEUE"],
                        [[d.message_id, d.task, d.task_id, d.source_queue]
                         for d in outcome.misdirected]))
    if outcome.misdirected:
        note(f"celery-sqs-kit: {len(outcome.misdirected)} dead letter(s) kept in {label}: "
             f"their kit_source_queue names a queue other than {owner.name}, so they were not "
             f"dead letters of {owner.name}'s; sent nowhere (a sender may set that attribute): "
             f"inspect them with dlq peek {owner.name}, then delete them")
        return 1
    if kept:
        note(f"celery-sqs-kit: {len(kept)} dead letter(s) kept in {label}: a run was killed "
             "while sending them, so their copy may be on the queue already; check whether "
             "those tasks ran, then run again with --uncertain resend or --uncertain delete")
        return 1
    if outcome.left and args.count is None:
        note(f"celery-sqs-kit: {outcome.left} dead letter(s) still in {label}, hidden by "
             "another consumer (a peek, or a run killed before it wrote its journal): run "
             "again in a minute")
        return 1
    return 0
