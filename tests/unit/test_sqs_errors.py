"""runtime.sqs_errors: AWS codes become the kit's typed errors, with what to check."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from runtime.errors import CredentialsError, KitError, QueueAccessDenied, QueueNotFound
from runtime.sqs_errors import is_transient, typed_error


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ReceiveMessage")


@pytest.mark.parametrize("code, kind, says", [
    ("AccessDenied", QueueAccessDenied, "role policy"),
    ("AWS.SimpleQueueService.NonExistentQueue", QueueNotFound, "region"),
    ("QueueDoesNotExist", QueueNotFound, "stack is deployed"),
    ("ExpiredToken", CredentialsError, "instance profile"),
])
def test_permanent_errors_are_typed_and_name_queue_action_and_what_to_check(code, kind, says):
    error = typed_error(client_error(code), queue="reports", action="ReceiveMessage")
    assert isinstance(error, kind) and isinstance(error, KitError)
    assert "ReceiveMessage on queue 'reports' failed" in str(error)
    assert code in str(error) and says in str(error)


@pytest.mark.parametrize("code, status", [("RequestThrottled", 400), ("ThrottlingException", 400),
                                          ("InternalError", 500), ("Whatever", 503)])
def test_throttling_and_server_errors_are_transient(code, status):
    error = client_error(code, status)
    assert is_transient(error)
    assert typed_error(error, queue="q", action="SendMessage") is None


def test_a_client_mistake_is_neither_transient_nor_typed():
    error = client_error("InvalidParameterValue")
    assert not is_transient(error)
    assert typed_error(error, queue="q", action="SendMessage") is None


def test_a_bare_403_is_access_denied_but_an_expired_token_stays_a_credentials_error():
    assert isinstance(typed_error(client_error("403", 403), queue="q", action="DeleteMessageBatch"),
                      QueueAccessDenied)
    assert isinstance(typed_error(client_error("InvalidClientTokenId", 403), queue="q",
                                  action="ReceiveMessage"), CredentialsError)
