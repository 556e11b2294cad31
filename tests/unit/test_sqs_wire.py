"""When the lean path stands aside for boto3, and how it tells a connection the
server closed from one it may reuse."""

from __future__ import annotations

import http.client
import logging
import socket

import botocore.session
import pytest
from botocore.config import Config
from botocore import UNSIGNED
from botocore.exceptions import NoCredentialsError, ParamValidationError
from botocore.retries.standard import RetryContext

from runtime.sqs_wire import LeanSqs, _dropped, lean, unsupported

STANDARD = {"mode": "standard", "total_max_attempts": 3}


def client(endpoint_url: str = "https://sqs.eu-west-1.amazonaws.com", **config):
    session = botocore.session.get_session()
    session.set_credentials("key", "secret")
    return session.create_client("sqs", region_name="eu-west-1", endpoint_url=endpoint_url,
                                 config=Config(**{"retries": STANDARD, **config}))


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_a_plain_endpoint_takes_the_lean_path():
    assert unsupported(client()) is None
    assert unsupported(client("http://localhost:4566")) is None
    assert isinstance(lean(client(), None), LeanSqs)


@pytest.mark.parametrize("config, reason", [
    ({"proxies": {"https": "http://proxy.internal:3128"}}, "client-config proxies"),
    ({"client_cert": "/etc/kit/client.pem"}, "a client certificate"),
    ({"retries": {"mode": "adaptive"}}, "retry mode 'adaptive'"),
    ({"retries": {"mode": "legacy", "max_attempts": 4}}, "retry mode 'legacy'"),
    ({"signature_version": UNSIGNED}, "signature version <botocore.UNSIGNED object"),
], ids=["proxies", "client-cert", "adaptive", "legacy", "unsigned"])
def test_what_botocore_does_differently_stays_with_boto3(config, reason, caplog):
    plain = client(**config)
    assert unsupported(plain).startswith(reason)
    with caplog.at_level(logging.INFO, logger="runtime.sqs_wire"):
        assert lean(plain, None) is plain
    assert f"SQS calls go through boto3 only ({reason}" in caplog.text


def test_a_proxy_from_the_environment_stays_with_boto3_unless_bypassed(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert unsupported(client()) == "HTTPS_PROXY"
    monkeypatch.setenv("NO_PROXY", ".amazonaws.com")
    assert unsupported(client()) is None


def test_an_https_client_whose_verification_cannot_be_read_stays_with_boto3():
    plain = client()
    plain._endpoint.http_session = object()  # an HTTP session that is not botocore's
    assert unsupported(plain) == "certificate verification not known"
    assert lean(plain, None) is plain
    unread = client("http://localhost:4566")
    unread._endpoint.http_session = object()
    assert unsupported(unread) is None  # plain HTTP verifies nothing


def test_a_call_without_credentials_fails_as_boto3_s_does():
    wire = lean(client("http://localhost:9"), None)
    with pytest.raises(NoCredentialsError):
        wire.receive_message(QueueUrl="http://localhost:9/1/q")


def test_other_calls_are_the_boto3_client_s():
    plain = client()
    wire = lean(plain, None)
    assert wire.send_message == plain.send_message
    assert wire.meta is plain.meta


def test_a_connection_the_server_closed_is_not_reused():
    ours, theirs = socket.socketpair()
    connection = http.client.HTTPConnection("localhost")
    connection.sock = ours
    assert not _dropped(connection)  # idle and open: reusable
    theirs.close()
    assert _dropped(connection)  # EOF waiting: the server hung up
    connection.sock = None
    assert _dropped(connection)
    ours.close()


def test_parameters_are_validated_before_any_request_as_boto3_s_default():
    wire = lean(client("http://localhost:9"), None)
    with pytest.raises(ParamValidationError, match="Entries\\[0\\].ReceiptHandle"):
        wire.delete_message_batch(QueueUrl="http://localhost:9/1/q",
                                  Entries=[{"Id": "0", "ReceiptHandle": None}])


@pytest.mark.parametrize("code, base", [("RequestThrottled", 1.0), ("InternalError", 0.05)])
def test_throttling_backs_off_from_one_second_as_botocore_s_standard_mode(code, base):
    wire = lean(client(), None)
    context = RetryContext(attempt_number=1,
                           operation_model=wire.meta.service_model.operation_model(
                               "ReceiveMessage"),
                           parsed_response={"Error": {"Code": code}})
    delays = [wire._retry.compute_retry_delay(context) for _ in range(200)]
    assert max(delays) <= base
    assert max(delays) > base / 2  # jittered over the whole base, not a smaller one
