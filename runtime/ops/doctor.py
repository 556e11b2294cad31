"""``doctor``: is the config the one deployed, and may this caller use its queues?

Each queue and DLQ is read with GetQueueAttributes (the one call tried for real:
it changes nothing); its settings are compared with the config
(:mod:`runtime.ops.checks`); send and receive permissions are simulated
(:mod:`runtime.ops.permissions`). Every problem is printed on one line with its
fix. A queue that cannot be read is a problem of the report, not a failure of
the command; failures that stop every check (no credentials, AWS unreachable)
end the command with exit status 3.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from runtime.config import QueueConfig, WorkerConfig
from runtime.errors import QueueAccessDenied, QueueNotFound
from runtime.ops import checks, permissions, queues
from runtime.ops.aws import Aws
from runtime.ops.checks import Mismatch
from runtime.ops.output import print_json, table

HELP = "compare the config with the deployed queues and the caller's permissions"
DESCRIPTION = """\
Compares the config with the deployed queues and with what the caller may do, and
prints each problem with its fix, for example:

  queues.reports.visibility_timeout: deployed 30, config 1800: redeploy the stack or
  re-render the config

Checked per queue and its DLQ: GetQueueAttributes (tried: it changes nothing), the
visibility timeout, receive wait time, redrive target and maxReceiveCount, FIFO and
KMS encryption. Send and receive permissions (with the queue's KMS key) come from
IAM's policy simulator for the caller's user or role; without IAM, or for a caller
that may not simulate, they are "not checked". The simulator reads the caller's own
policies, not queue or key policies.

exit status: 0 no problem; 1 problems found (listed); 2 usage or config error; 3 AWS
error that stops every check (the line on stderr names what to fix)."""

UNREADABLE_FIX = ("grant the caller sqs:GetQueueAttributes on it, or run with credentials "
                  "that may (AWS_PROFILE, or an operator role)")
MISSING_FIX = "deploy the stack, or pass the config it emitted (--config)"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("doctor", parents=[common], help=HELP, description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class QueueReport:
    queue: str
    unreadable: list[Mismatch]
    """The queue or DLQ that GetQueueAttributes could not read, and why."""
    mismatches: list[Mismatch]
    send: str
    receive: str

    @property
    def problems(self) -> list[Mismatch]:
        return self.unreadable + self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "attributes_read": not self.unreadable,
                "problems": [p.as_json() for p in self.problems],
                "send": self.send, "receive": self.receive}


def run(args: argparse.Namespace, config: WorkerConfig) -> int:
    aws = Aws(config)
    caller = permissions.identify(aws)
    simulator = permissions.Simulator(aws, caller)
    report = [examine(aws, simulator, queue) for queue in config.queues.values()]
    problems = [p for q in report for p in q.problems]
    if args.json:
        print_json({"source": config.source, "caller": caller.arn,
                    "simulated_principal": caller.principal,
                    "permissions_not_checked": simulator.problem,
                    "queues": [q.as_json() for q in report],
                    "problems": [p.as_json() for p in problems]})
        return 1 if problems else 0
    print(f"config: {config.source}")
    print(f"caller: {caller.arn or 'unknown (' + str(caller.problem) + ')'}")
    print(table(["QUEUE", "ATTRIBUTES", "SETTINGS", "SEND", "RECEIVE"],
                [[q.queue, "not read" if q.unreadable else "read",
                  f"{len(q.mismatches)} wrong" if q.mismatches else "ok",
                  _short(q.send), _short(q.receive)] for q in report]))
    if simulator.problem:
        print(f"permissions not checked: {simulator.problem}")
    print(f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
          + (":" if problems else ""))
    for problem in problems:
        print(f"  {problem.line()}")
    return 1 if problems else 0


def examine(aws: Aws, simulator: permissions.Simulator, queue: QueueConfig) -> QueueReport:
    unreadable: list[Mismatch] = []
    mismatches: list[Mismatch] = []
    attributes = _read(aws, f"queues.{queue.name}.url", queue.url, unreadable)
    if attributes is not None:
        mismatches += checks.queue_mismatches(queue, attributes)
    dlq = queue.dead_letter_queue
    if dlq is not None:
        dlq_attributes = _read(aws, f"queues.{queue.name}.dead_letter_queue.url", dlq.url,
                               unreadable)
        if dlq_attributes is not None:
            mismatches += checks.dead_letter_mismatches(queue, dlq_attributes)
    key = permissions.key_arn((attributes or {}).get("KmsMasterKeyId"), queue.arn)
    return QueueReport(
        queue=queue.name, unreadable=unreadable, mismatches=mismatches,
        send=_may(simulator, permissions.SEND, permissions.SEND_KEY, queue.arn, key),
        receive=_may(simulator, permissions.RECEIVE, permissions.RECEIVE_KEY, queue.arn, key))


def _read(aws: Aws, field: str, url: str, problems: list[Mismatch]) -> dict[str, str] | None:
    """The queue's attributes, or ``None`` with the reason added to ``problems``."""
    try:
        return queues.attributes(aws, url)
    except QueueAccessDenied as error:
        problems.append(Mismatch(field, f"unreadable ({error.code})", url, UNREADABLE_FIX))
    except QueueNotFound:
        problems.append(Mismatch(field, "no such queue", url, MISSING_FIX))
    return None


def _may(simulator: permissions.Simulator, actions: tuple[str, ...],
         key_actions: tuple[str, ...], queue_arn: str, key: str | None) -> str:
    verdict = simulator.decide(actions, queue_arn)
    if verdict == "allowed" and key is not None:
        verdict = simulator.decide(key_actions, key)
    return verdict


def _short(verdict: str) -> str:
    """The table shows the verdict; the reason for ``not checked`` is printed once below."""
    return "not checked" if verdict.startswith("not checked") else verdict
