"""A lean path for the SQS calls a worker makes for every message: ReceiveMessage,
DeleteMessageBatch and ChangeMessageVisibilityBatch.

Why: at 2,000 tasks a second a prefork worker's parent spent about 0.75 ms of CPU
in each boto3 call, and a tenth of a call per task each for receives and deletes
(profiled with py-spy; ``BENCHMARKS.md``). botocore's own work on a request and its
answer (serializing, signing, parsing) is under a fifth of that; the rest is the
machinery around it: about ten events per call, endpoint rule resolution, urllib3
and its response objects. On this path a call costs under half as much.

What is the same as boto3, because it is botocore's: the request is serialized by
botocore's serializer for the client's protocol (JSON, with SQS's query-compatible
header), signed by ``SigV4Auth`` with the client's own credentials (refreshing ones
refresh as they would), and the answer parsed by botocore's parser, so a result is
the same dict and an error the same modeled ``ClientError`` class with the same
``Error.Code`` (SQS's query codes such as ``AWS.SimpleQueueService.NonExistentQueue``).
Parameters are validated, as by boto3's default (a ``client-config`` that turns
validation off is not followed here: botocore does not expose it). Failures
are retried by botocore's standard retry conditions and backoff (throttling on a
1 s base, the rest on 50 ms) within the client's ``total_max_attempts``; a connection that cannot be made, is closed or
times out raises botocore's own ``EndpointConnectionError``, ``ConnectTimeoutError``,
``ConnectionClosedError``, ``ReadTimeoutError`` or ``SSLError``, after the client's
``connect_timeout`` and ``read_timeout``. botocore's parameter events
(``provide-client-params``, ``before-parameter-build``) are emitted as boto3 emits
them, so a hook that reads or changes a call's parameters, or fails it, still works.

What is different: each thread keeps one persistent ``http.client`` connection
(checked before reuse, as urllib3 does, so a connection the server closed is
replaced rather than failing a call); the request-level events (``before-sign``,
``before-send``, ``after-call``) are not emitted; there is no retry quota (the
lanes and the receive loop back off on their own once a call's attempts fail); an
answer cut short is retried (botocore may parse it as an empty result); tracing
that patches ``_make_api_call`` or listens on ``before-send`` does not see these calls.

TLS is verified exactly as the client would: the value botocore resolved for the
client (its ``verify`` argument, else ``AWS_CA_BUNDLE`` or the config file's
``ca_bundle``, else ``REQUESTS_CA_BUNDLE``, else botocore's default bundle; or no
verification with ``verify=False``) is read from the client itself, so a private CA
given any of these ways works on both paths or on neither.

Every other call goes to the boto3 client unchanged, and so does every call of a
client this path could not serve as botocore would: a proxy (``client-config``
``proxies`` or ``HTTP(S)_PROXY``), a client certificate, a signature version other
than SigV4, a retry mode other than ``standard``, an endpoint that is not
``http``/``https``, or an ``https`` endpoint whose verification cannot be read from
the client (an HTTP session that is not botocore's).
"""

from __future__ import annotations

import functools
import http.client
import logging
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HeadersDict
from botocore.client import BaseClient
from botocore.credentials import Credentials
from botocore.exceptions import (ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, HTTPClientError, NoCredentialsError,
                                 ReadTimeoutError)
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import SSLError as BotocoreSSLError
from botocore.httpsession import URLLib3Session, get_cert_path
from botocore.parsers import create_parser
from botocore.retries.standard import (ExponentialBackoff, RetryContext, RetryEventAdapter,
                                       RetryPolicy, StandardRetryConditions,
                                       ThrottlingErrorDetector)
from botocore.serialize import create_serializer

logger = logging.getLogger(__name__)

OPERATIONS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
USER_AGENT = f"celery-sqs-kit Botocore/{botocore.__version__}"


def unsupported(client: BaseClient) -> str | None:
    """Why the lean path cannot serve ``client`` as botocore would, or ``None``."""
    config = client.meta.config
    url = urlsplit(client.meta.endpoint_url)
    if url.scheme not in ("http", "https"):
        return f"endpoint scheme {url.scheme!r}"
    if config.proxies:
        return "client-config proxies"
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
            url.hostname or ""):
        return f"{url.scheme.upper()}_PROXY"
    if config.client_cert:
        return "a client certificate"
    if config.signature_version not in (None, "v4"):
        return f"signature version {config.signature_version!r}"
    mode = (config.retries or {}).get("mode", "legacy")
    if mode != "standard":
        return f"retry mode {mode!r}"
    if url.scheme == "https" and verification(client) is None:
        return "certificate verification not known"
    return None


def verification(client: BaseClient) -> bool | str | None:
    """How ``client`` verifies a TLS endpoint, as botocore resolved it when it made the
    client: ``True`` (botocore's default bundle), ``False`` (not at all) or a CA bundle's
    path; ``None`` when it cannot be read (a client whose HTTP session is not botocore's).

    botocore resolves it once, in ``EndpointCreator``, from the first of: the client's
    ``verify`` argument, the session's ``ca_bundle`` (``AWS_CA_BUNDLE`` or the config
    file's ``ca_bundle``), ``REQUESTS_CA_BUNDLE``, ``True``; the value is kept only on
    the client's HTTP session, so it is read there rather than resolved a second time."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    if not isinstance(session, URLLib3Session):
        return None
    verify = getattr(session, "_verify", None)
    return verify if isinstance(verify, (bool, str)) else None


def lean(client: BaseClient, credentials: Credentials | None) -> Any:
    """``client`` with its per-message calls on the lean path, or ``client`` itself
    when the path could not serve it as botocore would (logged once, at INFO).
    ``credentials`` are the ones the client signs with."""
    reason = unsupported(client)
    if reason is not None:
        logger.info("SQS calls go through boto3 only (%s)", reason)
        return client
    return LeanSqs(client, credentials)


class LeanSqs:
    """A boto3 SQS client whose ``receive_message``, ``delete_message_batch`` and
    ``change_message_visibility_batch`` take the lean path; every other attribute is
    the client's."""

    def __init__(self, client: BaseClient, credentials: Credentials | None) -> None:
        self._client = client
        self._credentials = credentials
        meta = client.meta
        model = meta.service_model
        self._models = {name: model.operation_model(name) for name in OPERATIONS}
        self._events = meta.events
        self._event_prefix = model.service_id.hyphenize()
        self._context = {"client_region": meta.region_name, "client_config": meta.config}
        self._serializer = create_serializer(model.resolved_protocol, include_validation=True)
        self._parser = create_parser(model.resolved_protocol)
        self._signing = (model.signing_name, meta.region_name)
        attempts = (meta.config.retries or {}).get("total_max_attempts")
        self._retry = RetryPolicy(
            StandardRetryConditions(**({} if attempts is None else {"max_attempts": attempts})),
            ExponentialBackoff(service_name=self._event_prefix,  # throttling: a 1 s base
                               throttling_detector=ThrottlingErrorDetector(RetryEventAdapter())))
        self._url = meta.endpoint_url
        url = urlsplit(self._url)
        self._path = url.path or "/"
        self._connect = self._connector(url, meta.config.connect_timeout,
                                        verification(client))
        self._read_timeout = meta.config.read_timeout
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def receive_message(self, **params: Any) -> dict[str, Any]:
        return self._call("ReceiveMessage", params)

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("DeleteMessageBatch", params)

    def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("ChangeMessageVisibilityBatch", params)

    # one call ----------------------------------------------------------------------
    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        model = self._models[operation]
        params = self._emit_params(operation, model, params)
        request = self._serializer.serialize_to_request(params, model)
        attempt = 0
        while True:
            attempt += 1
            answer = parsed = caught = None
            try:
                answer = self._send(request)
            except (BotocoreConnectionError, HTTPClientError) as error:
                caught = error
            else:
                parsed = self._parse(operation, model, answer)
            if caught is None and answer.status_code < 300:
                break
            context = RetryContext(attempt_number=attempt, operation_model=model,
                                   parsed_response=parsed, http_response=answer,
                                   caught_exception=caught)
            if not self._retry.should_retry(context):
                if parsed is not None:  # MaxAttemptsReached, as botocore reports it
                    parsed.setdefault("ResponseMetadata", {}).update(
                        context.get_retry_metadata())
                break
            time.sleep(self._retry.compute_retry_delay(context))
        if caught is not None:
            raise caught
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt - 1
        if answer.status_code >= 300:
            error = parsed.get("Error", {})
            # SQS names its modeled exceptions by the query-compatible code (botocore's
            # _handle_sqs_compatible_error), and its Error.Code stays the query code.
            raise self._client.exceptions.from_code(
                error.get("QueryErrorCode") or error.get("Code"))(parsed, operation)
        return parsed

    def _parse(self, operation: str, model: Any, answer: _Answer) -> dict[str, Any]:
        response = {"headers": answer.headers, "status_code": answer.status_code,
                    "body": answer.body, "context": {"operation_name": operation}}
        parsed = self._parser.parse(response, model.output_shape)
        if answer.status_code >= 300:  # botocore's second pass, for modeled error fields
            shape = model.service_model.shape_for_error_code(parsed.get("Error", {}).get("Code"))
            if shape is not None:
                parsed.update(self._parser.parse(response, shape))
        return parsed

    def _emit_params(self, operation: str, model: Any,
                     params: dict[str, Any]) -> dict[str, Any]:
        context = dict(self._context)
        for response in self._events.emit(f"provide-client-params.{self._event_prefix}."
                                          f"{operation}", params=params, model=model,
                                          context=context):
            if response[1] is not None:
                params = response[1]
                break
        self._events.emit(f"before-parameter-build.{self._event_prefix}.{operation}",
                          params=params, model=model, context=context)
        return params

    def _send(self, request: dict[str, Any]) -> _Answer:
        """One signed attempt on this thread's connection."""
        if self._credentials is None:
            raise NoCredentialsError()
        signed = AWSRequest(method=request["method"], url=self._url, data=request["body"],
                            headers={**request["headers"], "User-Agent": USER_AGENT})
        SigV4Auth(self._credentials.get_frozen_credentials(), *self._signing).add_auth(signed)
        connection = self._connection()
        try:
            connection.request(request["method"], self._path, request["body"],
                               dict(signed.headers.items()))
            response = connection.getresponse()
            body = response.read()
        except (TimeoutError, socket.timeout):
            self._drop(connection)
            raise ReadTimeoutError(endpoint_url=self._url) from None
        except ssl.SSLError as error:
            self._drop(connection)
            raise BotocoreSSLError(endpoint_url=self._url, error=error) from error
        except (OSError, http.client.HTTPException) as error:
            self._drop(connection)
            raise ConnectionClosedError(endpoint_url=self._url) from error
        except BaseException:  # interrupted mid-exchange: never reuse a half-read connection
            self._drop(connection)
            raise
        if response.will_close:
            self._drop(connection)
        return _Answer(response.status, HeadersDict(response.getheaders()), body)

    # this thread's connection --------------------------------------------------------
    def _connector(self, url: Any, connect_timeout: float,
                   verify: bool | str | None) -> Callable[[], http.client.HTTPConnection]:
        host, port = url.hostname, url.port
        if url.scheme == "https":
            return lambda: http.client.HTTPSConnection(host, port, timeout=connect_timeout,
                                                       context=_tls_context(verify))
        return lambda: http.client.HTTPConnection(host, port, timeout=connect_timeout)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and _dropped(connection):
            self._drop(connection)
            connection = None
        if connection is None:
            connection = self._connect()
            try:
                connection.connect()
            except (TimeoutError, socket.timeout):
                raise ConnectTimeoutError(endpoint_url=self._url) from None
            except ssl.SSLError as error:
                raise BotocoreSSLError(endpoint_url=self._url, error=error) from error
            except OSError as error:
                raise EndpointConnectionError(endpoint_url=self._url) from error
            connection.sock.settimeout(self._read_timeout)
            self._local.connection = connection
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None


@functools.cache
def _tls_context(verify: bool | str | None) -> ssl.SSLContext:
    """The TLS context of a client that verifies as ``verify`` says (``verification``),
    as botocore's HTTP session does: ``False`` checks neither certificate nor host name;
    otherwise the bundle ``get_cert_path`` names (``True``: botocore's default), and
    only it, as urllib3 loads it (``None``, not known, is never served: ``lean`` stands
    aside). One context per value (loading a bundle takes tens of milliseconds), made
    on the first connection, not with each client."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=get_cert_path(True if verify is None else verify))


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the server (readable while
    no request is outstanding: EOF, or bytes no request asked for)."""
    if connection.sock is None:
        return True
    poll = select.poll()
    poll.register(connection.sock, select.POLLIN)
    return bool(poll.poll(0))


class _Answer:
    """An HTTP answer as botocore's parser and retry checkers read it."""

    __slots__ = ("status_code", "headers", "body")

    def __init__(self, status_code: int, headers: HeadersDict, body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body
