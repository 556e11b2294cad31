"""AWS error codes, classified once: transient (retry), or one of the kit's typed errors."""

from __future__ import annotations

from botocore.exceptions import ClientError

from runtime.errors import CredentialsError, QueueAccessDenied, QueueNotFound, TransportError

_ACCESS = {"AccessDenied", "AccessDeniedException", "AuthorizationError",
           "KMS.AccessDeniedException", "KmsAccessDenied"}
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
            "NonExistentQueue"}
_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                "UnrecognizedClientException", "RequestExpired", "SignatureDoesNotMatch"}
TRANSIENT = {"RequestThrottled", "ThrottlingException", "Throttling",
             "AWS.SimpleQueueService.RequestThrottled", "ServiceUnavailable",
             "InternalError", "InternalFailure", "KmsThrottled", "KMS.ThrottlingException"}


def error_code(error: BaseException) -> str:
    """An AWS error's code, or the type name of any other failure (for logs and errors)."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") or ""
    return type(error).__name__


def is_transient(error: BaseException) -> bool:
    """Whether the same call may succeed later: throttling, 5xx, expired credentials
    (a refresh replaces them), and every failure that is not an answer from AWS
    (connection refused, reset or timed out, a credentials provider or STS down).
    Only AWS's own final answers are not: access denied, no such queue, a bad request."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error_code(error)
        return code in TRANSIENT or code in _CREDENTIALS or status >= 500
    return True


def typed_error(error: ClientError, *, queue: str, action: str) -> TransportError | None:
    """The kit's error for a permanent failure, or ``None`` when retrying may help."""
    code = error_code(error)
    message = error.response.get("Error", {}).get("Message", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _CREDENTIALS:
        return CredentialsError(queue, action, code)
    if code in _ACCESS or code == "403" or status == 403 or "not authorized" in message:
        return QueueAccessDenied(queue, action, code if code in _ACCESS else "AccessDenied")
    if code in _MISSING:
        return QueueNotFound(queue, action, code)
    return None
