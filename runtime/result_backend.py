"""The kit's result backend: Celery's DynamoDB backend with a bounded client, a retry
policy, and a known outcome when a result cannot be stored.

The rendered configuration selects it with the bundled transport (the stock rendering
is settings only and keeps Celery's own backend)::

    result_backend = "runtime.result_backend:DynamoDBBackend+dynamodb://@REGION/TABLE?ttl_seconds=N"

What Celery 5.7's own backend does when the table is throttled or unreachable, measured
with real workers on moto (``tests/integration/test_result_backend_faults.py`` keeps the
kit's answer to each):

- its client has boto3's defaults, 60 s to connect and 60 s to read, 3 attempts: a
  table that never answers holds a worker slot for minutes per result;
- ``result_backend_always_retry`` does nothing for it: it names no error safe to retry;
- throttled past botocore's retries, the SUCCESS of a task that ran is stored as a
  FAILURE (the throttling error; under prefork ``MaybeEncodingError``, because
  botocore's error classes do not pickle), so a caller believes a task failed that
  succeeded;
- unreachable, under prefork the message is acked and the failure to store the
  failure escapes into the main process ("Pool callback raised exception"); under
  threads the error escapes the pool thread, the message is never acked, stays held
  until the worker stops, and the task then runs again.

Here:

- the client gives up an attempt after ``CONNECT_TIMEOUT`` s connecting or
  ``READ_TIMEOUT`` s waiting, and makes one attempt per try: Celery's own retry loop
  is the only one (``result_backend_always_retry``, settings in :data:`RETRY_SETTINGS`),
  for throttling, 5xx, expired credentials and the network (:func:`safe_to_retry`):
  up to 7 tries with full-jitter backoff from 0.5 s doubling to 5 s. About 10 s of
  throttling is ridden out; a table that never answers costs a result at most about
  40 s;
- a result that still cannot be stored (or that DynamoDB refuses for good: access
  denied, no such table, an item over 400 KB) is logged at ERROR with the task id,
  its state and the error, and not raised: the task ran and is not run again (the
  kit's at-least-once is about running tasks), its message is acked, and its result
  is lost (``AsyncResult.get`` waits until its own timeout; the state stays PENDING);
- the table is checked (DescribeTable, DescribeTimeToLive) when the client is first
  used, as Celery does, and checked again on the next use if that failed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionError, CredentialRetrievalError,
                                 HTTPClientError, NoCredentialsError)
from celery.backends import dynamodb
from celery.exceptions import BackendStoreError

from runtime.sqs_errors import error_code, is_transient

logger = logging.getLogger(__name__)

BACKEND = "runtime.result_backend:DynamoDBBackend"
"""The class part of the rendered ``result_backend`` (``BACKEND + "+dynamodb://..."``)."""
CONNECT_TIMEOUT, READ_TIMEOUT = 2, 3
CLIENT_CONFIG = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                       retries={"mode": "standard", "total_max_attempts": 1})
RETRY_SETTINGS: dict[str, Any] = {
    "result_backend_always_retry": True,
    "result_backend_max_retries": 6,
    "result_backend_base_sleep_between_retries_ms": 250,
    "result_backend_max_sleep_between_retries_ms": 5000,
}
"""Celery's retry loop for result stores and reads: sleeps of up to 0.5, 1, 2, 4, 5, 5 s
(full jitter, so half that on average) between 7 tries."""
THROTTLING = {"ProvisionedThroughputExceededException", "RequestLimitExceeded",
              "ThrottlingException", "LimitExceededException"}


UNANSWERED = (ConnectionError, HTTPClientError, NoCredentialsError, CredentialRetrievalError)
"""No answer from DynamoDB, or no credentials to ask it with (the container-credentials
endpoint or STS down): the same request may succeed later."""


def safe_to_retry(error: BaseException) -> bool:
    """Throttling, 5xx, expired or unobtainable credentials, or no answer (refused,
    timed out, reset): the same request may succeed later. DynamoDB's final answers
    are not."""
    if isinstance(error, ClientError):
        return error_code(error) in THROTTLING or is_transient(error)
    return isinstance(error, UNANSWERED)


class DynamoDBBackend(dynamodb.DynamoDBBackend):
    """Celery's DynamoDB backend with the kit's client and outcome (module docstring)."""

    def exception_safe_to_retry(self, exc: BaseException) -> bool:
        return safe_to_retry(exc)

    def store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> Any:
        try:
            return super().store_result(task_id, result, state, traceback, request=request,
                                        **kwargs)
        except Exception as error:
            # Celery's retry loop raises BackendStoreError from the last error it retried.
            cause = error.__context__ if isinstance(error, BackendStoreError) else error
            if not isinstance(cause, (ClientError, *UNANSWERED)):
                raise  # not DynamoDB's answer (an unserializable result): Celery's to handle
            # Raising would not bring the result back: Celery would store a FAILURE the
            # same table refuses, and under the threads pool the message would never be
            # acked and the task would run again.
            logger.error("task %s ran, but its %s result could not be stored in DynamoDB "
                         "table %s: %s; the task is not run again and its result is lost",
                         task_id, state, self.table_name, _describe(cause))
            return result

    def _get_client(self, access_key_id: str | None = None,
                    secret_access_key: str | None = None) -> Any:
        if self._client is None:
            keys = {} if access_key_id is None else {
                "aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
            self._client = boto3.client("dynamodb", region_name=self.aws_region,
                                        endpoint_url=self.endpoint_url, config=CLIENT_CONFIG,
                                        **keys)
            try:  # the checks Celery makes when it creates its client
                self._get_or_create_table()
                if self._has_ttl() is not None:
                    self._validate_ttl_methods()
                    self._set_table_ttl()
            except Exception:
                self._client = None  # check again on the next use, not never
                raise
        return self._client


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return f"{error_code(error)} ({error.response.get('Error', {}).get('Message', '')})"
    return f"{type(error).__name__} ({error})"


def dynamodb_table(result_backend: object) -> tuple[str | None, str] | None:
    """``(region, table)`` of a DynamoDB ``result_backend`` setting, Celery's own
    (``dynamodb://@REGION/TABLE``) or the kit's (``BACKEND + "+dynamodb://..."``);
    ``None`` for any other backend."""
    url = str(result_backend or "")
    if url.startswith(BACKEND + "+"):
        url = url[len(BACKEND) + 1:]
    parts = urlsplit(url)
    if parts.scheme != "dynamodb":
        return None
    return parts.hostname or None, parts.path.strip("/")
