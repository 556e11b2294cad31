"""The check a worker makes of each queue before it consumes it: fail in seconds,
naming the queue and its URL, rather than poll a queue that cannot answer.

A worker started with a queue URL that does not exist, the wrong region, an
endpoint it cannot reach, or a role that may not use the queue would otherwise
start, report ready, and log a failed receive every few seconds for ever. So the
bundled transport asks SQS for the queue's ARN (GetQueueAttributes, which the
worker roles are granted) once per queue and channel, when consuming starts,
through the ``ops`` client (5 s connect and 10 s read timeouts, 3 attempts), and
turns any failure into one of the kit's errors:

==============================  =================================================
failure                         error (message: queue, URL, what to check)
==============================  =================================================
no such queue (deleted, another :class:`~runtime.errors.QueueNotFound`
region, a typo in the URL)
access denied                   :class:`~runtime.errors.QueueAccessDenied`
keys unknown, expired, or the   :class:`~runtime.errors.CredentialsError`
role cannot be assumed
no answer from the endpoint     :class:`~runtime.errors.EndpointUnreachable`
(refused, timed out, DNS)
any other final answer          :class:`~runtime.errors.TransportError`
==============================  =================================================

A failure that says nothing about the configuration is asked about again, with a
backoff (0.5 s doubling to 8 s), for up to ``CHECK_PATIENCE`` seconds (30) before it
counts: SQS throttling or failing (5xx) and a connection closed mid-request (reset,
dropped by a NAT or a proxy). A worker that starts during such a blip would
otherwise exit, its orchestrator restart it, and the logs blame its role policy.
An endpoint that refuses connections or never answers fails as before.

None of them is among kombu's ``connection_errors`` or ``channel_errors``, so
Celery does not reconnect and retry: it logs ``Unrecoverable error`` and the
worker exits with status 1. Failures after this check (a receive, a delete) stay
recoverable: logged and retried, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from botocore.client import BaseClient
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectionError,
                                 HTTPClientError, NoCredentialsError)

from runtime.errors import CredentialsError, EndpointUnreachable, TransportError
from runtime.sqs_errors import TRANSIENT, error_code, typed_error

logger = logging.getLogger(__name__)

ACTION = "GetQueueAttributes"
CHECK_PATIENCE = 30.0
"""Seconds a check keeps asking while the failures say nothing about the configuration."""


def check_queue(client: BaseClient, queue: str, url: str, *,
                patience: float = CHECK_PATIENCE, sleep: Callable[[float], None] = time.sleep,
                monotonic: Callable[[], float] = time.monotonic) -> None:
    """Raise the kit's error for ``queue`` at ``url`` unless SQS answers for it."""
    give_up = monotonic() + patience
    delay = 0.5
    while True:
        try:
            client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return
        except Exception as error:  # every failure is sorted; the caller stops the worker
            if not is_blip(error) or monotonic() + delay > give_up:
                raise check_error(error, queue, url) from error
            logger.warning("checking queue %r: %s; asking again in %.1f s", queue,
                           error_code(error), delay)
        sleep(delay)
        delay = min(delay * 2, 8.0)


def is_blip(error: BaseException) -> bool:
    """A failure that says nothing about the configuration: SQS throttling or failing
    (5xx), or a connection closed after the request was sent."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(error) in TRANSIENT or status >= 500
    return isinstance(error, ConnectionClosedError)


def check_error(error: BaseException, queue: str, url: str) -> TransportError:
    """The kit's error for a failed check of ``queue`` at ``url``."""
    detail = f"queue URL {url}"
    if isinstance(error, ClientError):
        typed = typed_error(error, queue=queue, action=ACTION)
        if typed is None:
            return TransportError(queue, ACTION, error_code(error), detail)
        return type(typed)(queue, ACTION, typed.code, detail)  # AWS's codes for it, as one
    if isinstance(error, TransportError):  # runtime.credentials: the role's STS call failed
        return type(error)(queue, error.action, error.code, f"{detail}; {error.detail}")
    if isinstance(error, NoCredentialsError):
        return CredentialsError(queue, ACTION, error_code(error), detail)
    if isinstance(error, (ConnectionError, HTTPClientError)):
        return EndpointUnreachable(queue, ACTION, error_code(error), f"{detail}; {error}")
    return TransportError(queue, ACTION, error_code(error), f"{detail}; {error}")
