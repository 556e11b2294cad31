"""Redrive with SQS's own message move task (StartMessageMoveTask).

SQS moves the messages itself, server-side, at up to 500 per second, and keeps
going if this command is interrupted: a rerun finds the running task and
watches it instead of starting another (SQS allows one per queue). Messages are
moved as they are, message attributes included (``kit_reason`` and
``kit_source_queue`` stay on them). The destination is always the config's
queue whose DLQ this is (``DestinationArn``), so messages the transport moved
with SendMessage, which SQS does not know the origin of, go back too.

Whether the endpoint has the API is asked with ListMessageMoveTasks, which
changes nothing. Emulators answer it with an unknown-action error (fauxqs:
``InvalidAction``) or a bare HTTP 500 without an AWS error code (moto); both
mean "not offered", and ``--method auto`` then copies instead.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as NoConnection

from runtime.errors import QueueAccessDenied, TransportError
from runtime.ops.aws import AWS_FAILURES, Aws, call, failure
from runtime.ops.output import Progress
from runtime.sqs_errors import error_code

NOT_OFFERED = {"InvalidAction", "UnsupportedOperation",
               "AWS.SimpleQueueService.UnsupportedOperation", "UnknownOperationException",
               "NotImplemented", "InvalidOperation"}
POLL_SECONDS = 2.0
MAX_RATE = 500
"""SQS's limit on MaxNumberOfMessagesPerSecond."""
DONE = {"COMPLETED", "CANCELLED", "FAILED"}


def not_offered(error: Exception) -> bool:
    """An answer that means the endpoint does not know the action."""
    if isinstance(error, ClientError):
        code = error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in NOT_OFFERED or status == 501 or code.isdigit()
    return not isinstance(error, NoConnection)  # an answer, but not AWS's (an HTML page)


def running_task(aws: Aws, label: str, dlq_arn: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether the endpoint offers move tasks, the task running on this DLQ if any)."""
    try:
        tasks = aws.once("sqs").list_message_move_tasks(SourceArn=dlq_arn,
                                                         MaxResults=1)["Results"]
    except AWS_FAILURES as error:
        if not_offered(error):
            return False, None
        raise failure(error, queue=label, action="ListMessageMoveTasks") from None
    return True, next((t for t in tasks if t.get("Status") == "RUNNING"), None)


def start(aws: Aws, label: str, dlq_arn: str, destination_arn: str,
          rate: float | None) -> str:
    request: dict[str, Any] = {"SourceArn": dlq_arn, "DestinationArn": destination_arn}
    if rate is not None:
        request["MaxNumberOfMessagesPerSecond"] = int(rate)
    try:
        return call(label, "StartMessageMoveTask", aws.client("sqs").start_message_move_task,
                    **request)["TaskHandle"]
    except QueueAccessDenied as error:
        raise QueueAccessDenied(label, "StartMessageMoveTask", error.code, hint=(
            "the caller may not start move tasks: grant it sqs:StartMessageMoveTask, "
            "sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on the DLQ and "
            "sqs:SendMessage on the queue, or use --method copy")) from None


def watch(aws: Aws, label: str, dlq_arn: str, progress: Progress) -> dict[str, Any]:
    """Poll the DLQ's newest move task until it ends; its last ListMessageMoveTasks entry."""
    sqs = aws.client("sqs")
    while True:
        results = call(label, "ListMessageMoveTasks", sqs.list_message_move_tasks,
                       SourceArn=dlq_arn, MaxResults=1)["Results"]
        if not results:
            raise TransportError(label, "ListMessageMoveTasks", "NoTask",
                                 hint="the move task vanished: check the DLQ in the console")
        task = results[0]
        progress.set(int(task.get("ApproximateNumberOfMessagesMoved", 0)),
                     int(task.get("ApproximateNumberOfMessagesToMove", 0)) or None)
        if task.get("Status") in DONE:
            if task["Status"] == "FAILED":
                raise TransportError(label, "StartMessageMoveTask", "FAILED",
                                     task.get("FailureReason", ""),
                                     hint="fix what the reason names and run again, or use "
                                          "--method copy")
            return task
        time.sleep(POLL_SECONDS)
