"""AWS clients for the operator commands, and their failures as the kit's errors.

Credentials come from the default chain (environment, profile, SSO, the instance
or task role); the region from the worker-config document; the endpoint from the
document or, when it names none, ``AWS_ENDPOINT_URL`` (boto3 reads it), which is
how the commands reach an emulator.

Two kinds of client: :meth:`Aws.client` for the calls a command is about
(standard retries), and :meth:`Aws.once` (one attempt, short timeouts) for
optional look-ups whose failure only means "not available here" (CloudWatch, IAM
simulation, the move-task API), so an emulator that lacks them costs no retries,
and for a send that must not be repeated behind the caller's back (a retried
SendMessage to a standard queue can deliver the message twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.parsers import ResponseParserError

from runtime.config import WorkerConfig
from runtime.errors import (CredentialsError, QueueAccessDenied, QueueNotFound,
                            TransportError)
from runtime.sqs_errors import error_code, is_transient, typed_error

STANDARD = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                  read_timeout=30)
ONCE = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10)

NO_CREDENTIALS = ("no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
                  "AWS_SECRET_ACCESS_KEY), or run where an instance or task role is available")
UNREACHABLE = "cannot reach AWS: check the network, the document's region and AWS_ENDPOINT_URL"

AWS_FAILURES = (ClientError, BotoCoreError, ResponseParserError)
"""Everything a botocore call raises when it fails: an AWS answer, no answer, or an
answer that is not AWS's (an emulator's HTML error page)."""


class Aws:
    """One session for a command, with a client per service made on first use."""

    def __init__(self, config: WorkerConfig) -> None:
        self.endpoint_url = config.endpoint_url
        self._session = boto3.Session(region_name=config.region)
        self._clients: dict[tuple[str, bool], BaseClient] = {}

    def client(self, service: str) -> BaseClient:
        return self._make(service, once=False)

    def once(self, service: str) -> BaseClient:
        return self._make(service, once=True)

    def _make(self, service: str, *, once: bool) -> BaseClient:
        key = (service, once)
        if key not in self._clients:
            self._clients[key] = self._session.client(
                service, endpoint_url=self.endpoint_url, config=ONCE if once else STANDARD)
        return self._clients[key]


def call(queue: str, action: str, method: Callable[..., dict[str, Any]], /,
         **kwargs: Any) -> dict[str, Any]:
    """``method(**kwargs)``; a failure raises the kit's :class:`TransportError` naming the
    queue, the action and what the operator should fix."""
    try:
        return method(**kwargs)
    except AWS_FAILURES as error:
        raise failure(error, queue=queue, action=action) from None


def failure(error: Exception, *, queue: str, action: str) -> TransportError:
    """Any botocore failure as the kit's error."""
    if isinstance(error, ClientError):
        return translate(error, queue=queue, action=action)
    if isinstance(error, NoCredentialsError):
        return CredentialsError(queue, action, "NoCredentials", hint=NO_CREDENTIALS)
    if isinstance(error, ResponseParserError):
        return TransportError(queue, action, "ResponseParserError", hint=(
            "the endpoint's answer is not an AWS one: check AWS_ENDPOINT_URL and the "
            "document's endpoint_url"))
    return TransportError(queue, action, type(error).__name__, str(error), hint=UNREACHABLE)


def translate(error: ClientError, *, queue: str, action: str) -> TransportError:
    """The kit's error for an AWS answer, with the fix for the person running the command."""
    typed = typed_error(error, queue=queue, action=action)
    code = typed.code if typed is not None else error_code(error)
    if isinstance(typed, QueueAccessDenied):
        permission = ("kms:Decrypt and kms:GenerateDataKey on the queue's KMS key"
                      if code.upper().startswith("KMS") else f"sqs:{action} on it")
        return QueueAccessDenied(queue, action, code, hint=(
            f"the caller may not do this: grant it {permission}, or run with credentials "
            "that may (AWS_PROFILE, or an operator role)"))
    if isinstance(typed, QueueNotFound):
        return QueueNotFound(queue, action, code, hint=(
            "no queue at that URL: check the region, that the stack is deployed, and that "
            "--config is the document it emitted"))
    if isinstance(typed, CredentialsError):
        return CredentialsError(queue, action, code, hint=(
            "the caller's credentials are expired or invalid: refresh them (a new session, "
            "aws sso login) or check AWS_PROFILE"))
    if is_transient(error):
        return TransportError(queue, action, code, hint="AWS kept failing: try again later")
    message = error.response.get("Error", {}).get("Message", "")
    return TransportError(queue, action, code, message, hint=(
        "check the document's region, AWS_ENDPOINT_URL and the queue URL"))
