"""The lean path (``runtime.sqs_wire``) against boto3, on both emulators: the same
results, the same error classes and codes, botocore's retries within the client's
attempts, botocore's exceptions for a network that fails, the parameter hooks, and
TLS verified as the client verifies it, whichever way a CA bundle is given."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError,
                                 ReadTimeoutError)

from local_aws.counting_proxy import CountingProxy
from local_aws.fleet import EMULATOR_KEYS, REGION, sqs_client
from local_aws.private_ca import make_private_ca
from runtime.credentials import RoleCredentials
from runtime.sqs_wire import LeanSqs, lean

pytestmark = pytest.mark.integration

ATTEMPTS = 3


def clients(endpoint_url: str, verify: bool | str | None = None,
            **config: Any) -> tuple[Any, LeanSqs]:
    """A boto3 client and the same client on the lean path (one session, one config)."""
    session = botocore.session.get_session()
    session.set_credentials(EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                            EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"])
    client = session.create_client("sqs", region_name=REGION, endpoint_url=endpoint_url,
                                   verify=verify, config=Config(**{"retries": {
                                       "mode": "standard", "total_max_attempts": ATTEMPTS},
                                       **config}))
    wire = lean(client, session.get_credentials())
    assert isinstance(wire, LeanSqs)
    return client, wire


@pytest.fixture(params=["fauxqs", "moto"])
def server(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def queue(server) -> str:
    return sqs_client(server.endpoint_url).create_queue(
        QueueName=f"w{uuid.uuid4().hex[:10]}")["QueueUrl"]


def received(client: Any, url: str) -> dict[str, Any]:
    return client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  VisibilityTimeout=30, MessageAttributeNames=["All"],
                                  MessageSystemAttributeNames=["ApproximateReceiveCount"])


def test_a_receive_brings_the_same_messages_as_boto3(server, queue):
    boto, wire = clients(server.endpoint_url)
    boto.send_message(QueueUrl=queue, MessageBody="héllo", MessageAttributes={
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "text": {"DataType": "String", "StringValue": "x"}})
    first = received(wire, queue)["Messages"]
    wire.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": "0", "ReceiptHandle": first[0]["ReceiptHandle"], "VisibilityTimeout": 0}])
    second = received(boto, queue)["Messages"]

    def same(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k not in ("ReceiptHandle", "Attributes")}
    assert [same(m) for m in first] == [same(m) for m in second]
    assert first[0]["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\xff"  # bytes, as boto
    assert first[0]["Attributes"] == {"ApproximateReceiveCount": "1"}


def test_batch_answers_are_the_same_dicts_as_boto3(server, queue):
    boto, wire = clients(server.endpoint_url)
    for body in ("one", "two"):
        boto.send_message(QueueUrl=queue, MessageBody=body)
    handles = [m["ReceiptHandle"] for m in received(boto, queue)["Messages"]]
    assert len(handles) == 2
    answers = []
    for client, handle in zip((boto, wire), handles):
        answer = client.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": "ok", "ReceiptHandle": handle}, {"Id": "bad", "ReceiptHandle": "nonsense"}])
        metadata = answer.pop("ResponseMetadata")
        assert (metadata["HTTPStatusCode"], metadata["RetryAttempts"]) == (200, 0)
        answers.append(answer)
    assert answers[1] == answers[0]
    assert {"Id": "ok"} in answers[1]["Successful"]


@pytest.mark.parametrize("call", [
    lambda c, url: c.receive_message(QueueUrl=url, WaitTimeSeconds=0),
    lambda c, url: c.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "0", "ReceiptHandle": "h"}]),
    lambda c, url: c.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "0", "ReceiptHandle": "h", "VisibilityTimeout": 0}]),
], ids=["ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"])
def test_a_missing_queue_raises_what_boto3_raises(server, queue, call):
    boto, wire = clients(server.endpoint_url)
    gone = queue + "-gone"
    errors = []
    for client in (boto, wire):
        with pytest.raises(ClientError) as caught:
            call(client, gone)
        errors.append(caught.value)
    assert type(errors[1]) is type(errors[0]) is boto.exceptions.QueueDoesNotExist
    assert errors[1].response["Error"] == errors[0].response["Error"]
    assert errors[1].response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert errors[1].response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_throttling_is_retried_within_the_client_s_attempts(fauxqs):
    url = sqs_client(fauxqs.endpoint_url).create_queue(QueueName="throttled")["QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        _boto, wire = clients(proxy.endpoint_url)
        proxy.inject("ReceiveMessage", ATTEMPTS - 1, 400, "RequestThrottled")
        answer = wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert answer["ResponseMetadata"]["RetryAttempts"] == ATTEMPTS - 1
        proxy.inject("ReceiveMessage", ATTEMPTS, 400, "RequestThrottled")
        with pytest.raises(ClientError) as caught:
            wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert caught.value.response["Error"]["Code"] == "RequestThrottled"
        metadata = caught.value.response["ResponseMetadata"]
        assert (metadata["RetryAttempts"], metadata["MaxAttemptsReached"]) == (ATTEMPTS - 1, True)
        assert "reached max retries: 2" in str(caught.value)
        assert proxy.counts()["ReceiveMessage"] == 2 * ATTEMPTS


def test_a_denied_call_is_not_retried(fauxqs):
    url = sqs_client(fauxqs.endpoint_url).create_queue(QueueName="denied")["QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        boto, wire = clients(proxy.endpoint_url)
        errors = []
        for client in (boto, wire):
            proxy.inject("DeleteMessageBatch", 1, 403, "AccessDenied")
            with pytest.raises(ClientError) as caught:
                client.delete_message_batch(QueueUrl=url, Entries=[{"Id": "0",
                                                                    "ReceiptHandle": "h"}])
            errors.append(caught.value)
        assert errors[1].response["Error"] == errors[0].response["Error"]
        assert proxy.counts()["DeleteMessageBatch"] == 2  # one each


def test_a_reset_connection_is_retried_and_then_raises_botocore_s_error(fauxqs):
    url = sqs_client(fauxqs.endpoint_url).create_queue(QueueName="resets")["QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        _boto, wire = clients(proxy.endpoint_url)
        proxy.inject_reset("ReceiveMessage", 1)
        assert wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)[
            "ResponseMetadata"]["RetryAttempts"] == 1
        proxy.inject_reset("ReceiveMessage", ATTEMPTS)
        with pytest.raises(ConnectionClosedError):
            wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # a new connection


def test_an_answer_later_than_the_read_timeout_raises_botocore_s_error(fauxqs):
    url = sqs_client(fauxqs.endpoint_url).create_queue(QueueName="stalls")["QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        _boto, wire = clients(proxy.endpoint_url, read_timeout=1)
        proxy.inject_stall("ReceiveMessage", ATTEMPTS, 3)
        with pytest.raises(ReadTimeoutError):
            wire.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert proxy.faulted() == {"stall": ATTEMPTS}


def test_an_endpoint_nobody_listens_on_raises_botocore_s_error():
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    _boto, wire = clients(f"http://localhost:{port}", connect_timeout=1)
    with pytest.raises(EndpointConnectionError):
        wire.receive_message(QueueUrl=f"http://localhost:{port}/1/q", WaitTimeSeconds=0)


def test_parameter_hooks_see_change_and_fail_calls_as_with_boto3(server, queue):
    boto, wire = clients(server.endpoint_url)
    seen: list[dict[str, Any]] = []
    boto.meta.events.register("before-parameter-build.sqs.ReceiveMessage",
                              lambda params, **_k: seen.append(dict(params)))
    boto.meta.events.register("provide-client-params.sqs.ReceiveMessage",
                              lambda params, **_k: {**params, "WaitTimeSeconds": 0})
    wire.receive_message(QueueUrl=queue, WaitTimeSeconds=20)  # answered at once: changed
    assert seen == [{"QueueUrl": queue, "WaitTimeSeconds": 0}]

    def refuse(**_kwargs):
        raise RuntimeError("refused by a hook")
    boto.meta.events.register("before-parameter-build.sqs.DeleteMessageBatch", refuse)
    with pytest.raises(RuntimeError, match="refused by a hook"):
        wire.delete_message_batch(QueueUrl=queue, Entries=[{"Id": "0", "ReceiptHandle": "h"}])


# TLS: a private CA ---------------------------------------------------------------------
CA_WAYS = ["verify argument", "AWS_CA_BUNDLE", "config file ca_bundle", "REQUESTS_CA_BUNDLE",
           "verify=False", "none given"]


@pytest.fixture
def tls_front(fauxqs, tmp_path, monkeypatch):
    """fauxqs behind HTTPS whose certificate only the test's own CA signed, with no CA
    bundle in the environment (the machine's own would be taken otherwise); yields
    (endpoint URL, the CA's file, a queue's URL)."""
    for name in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    ca = make_private_ca(tmp_path)
    url = sqs_client(fauxqs.endpoint_url).create_queue(
        QueueName=f"tls{uuid.uuid4().hex[:10]}")["QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url, tls=ca.server_context()) as proxy:
        yield proxy.endpoint_url, str(ca.ca_file), url


def give_ca(way: str, ca_file: str, tmp_path: Any, monkeypatch: Any) -> bool | str | None:
    """Give the CA bundle ``way``; the client's ``verify`` argument that goes with it."""
    if way == "verify argument":
        return ca_file
    if way == "verify=False":
        return False
    if way in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(way, ca_file)
    elif way == "config file ca_bundle":
        (tmp_path / "config").write_text(f"[default]\nca_bundle = {ca_file}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    return None


def outcome(call: Any) -> str:
    try:
        call()
    except Exception as error:  # the outcome compared is the exception's class
        return type(error).__name__
    return "answered"


@pytest.mark.parametrize("way", CA_WAYS)
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # verify=False
def test_the_lean_path_verifies_tls_as_the_client_does(tls_front, tmp_path, monkeypatch, way):
    endpoint_url, ca_file, url = tls_front
    boto, wire = clients(endpoint_url, give_ca(way, ca_file, tmp_path, monkeypatch))
    receive = {"QueueUrl": url, "WaitTimeSeconds": 0}
    assert outcome(lambda: wire.receive_message(**receive)) == \
        outcome(lambda: boto.receive_message(**receive)) == \
        ("SSLError" if way == "none given" else "answered")


def test_the_kit_s_clients_verify_with_requests_ca_bundle_on_the_lean_path(tls_front,
                                                                             monkeypatch):
    endpoint_url, ca_file, url = tls_front
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    session = botocore.session.get_session()
    session.set_credentials(EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                            EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"])
    kit = RoleCredentials(region=REGION, endpoint_url=endpoint_url, base_session=session,
                          configs={"receive": Config(retries={"mode": "standard"})})
    receive = kit.client("sqs", None, "receive")
    assert isinstance(receive, LeanSqs)
    assert receive.receive_message(QueueUrl=url, WaitTimeSeconds=0)["ResponseMetadata"][
        "HTTPStatusCode"] == 200
