"""The local stand-ins themselves: IAM enforcement, the operator, the moto
shim's resource-level checks for DynamoDB (stock moto asks about ``*``), and the
counting proxy's injected faults, a credentials endpoint's outage, killing a worker."""

from __future__ import annotations

import json
import os
import signal
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, MetadataRetrievalError,
                                 ReadTimeoutError)
from botocore.utils import ContainerMetadataFetcher

from local_aws.celery_worker import CeleryWorker
from local_aws.container_credentials import CredentialsEndpoint, MintedCredentials

from local_aws.counting_proxy import ANY, CountingProxy, TokenCheckingProxy
from local_aws.fleet import (EMULATOR_KEYS, create_queue, prepare_worker_dir, sqs_client,
                             worker_document, worker_env)
from local_aws.moto_server import REGION, MotoServer
from local_aws.operator import create_operator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory):
    with MotoServer(enforce_iam=True,
                    log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        operator = create_operator(server.endpoint_url)
        yield server, operator


def client(service, endpoint, **creds):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **creds)


def test_unknown_keys_are_refused_once_enforcement_starts(enforcing):
    server, _operator = enforcing
    stranger = client("sqs", server.endpoint_url, aws_access_key_id="AKIDSTRANGER",
                      aws_secret_access_key="nope")
    with pytest.raises(ClientError):
        stranger.list_queues()


def test_operator_repr_hides_its_secret(enforcing):
    _server, operator = enforcing
    assert operator.secret_access_key not in repr(operator)
    assert operator.access_key_id not in repr(operator)


def test_dynamodb_grants_are_checked_per_table(enforcing):
    server, operator = enforcing
    session = operator.session()
    ddb = session.client("dynamodb", endpoint_url=server.endpoint_url)
    for name in ("granted", "other"):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    iam = session.client("iam", endpoint_url=server.endpoint_url)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "ecs-tasks.amazonaws.com", "AWS": operator.arn}}]}
    role = iam.create_role(RoleName="table-reader",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName="table-reader", PolicyName="one-table", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:DescribeTable",
            "Resource": f"arn:aws:dynamodb:{REGION}:123456789012:table/granted"}]}))
    c = session.client("sts", endpoint_url=server.endpoint_url).assume_role(
        RoleArn=role["Arn"], RoleSessionName="reader")["Credentials"]
    reader = client("dynamodb", server.endpoint_url, aws_access_key_id=c["AccessKeyId"],
                    aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
    assert reader.describe_table(TableName="granted")["Table"]["TableName"] == "granted"
    with pytest.raises(ClientError) as caught:
        reader.describe_table(TableName="other")
    assert "not authorized to perform: dynamodb:DescribeTable" in str(caught.value)


def impatient_sqs(endpoint: str):
    """One attempt per call and a 1 s read timeout: each injected fault shows once."""
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=EMULATOR_KEYS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=EMULATOR_KEYS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(read_timeout=1, retries={"total_max_attempts": 1}))


@pytest.fixture
def proxied(fauxqs, request):
    """(direct client, client through a fresh proxy, the proxy, a fresh queue URL)."""
    direct = sqs_client(fauxqs.endpoint_url)
    url = direct.create_queue(QueueName=f"proxy-{request.node.name[-40:]}".replace("_", "-"))[
        "QueueUrl"]
    with CountingProxy(fauxqs.endpoint_url) as proxy:
        yield direct, impatient_sqs(proxy.endpoint_url), proxy, url


def visible(sqs, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])


def test_a_reset_request_reaches_sqs_but_its_answer_never_comes_back(proxied):
    direct, sqs, proxy, url = proxied
    proxy.inject_reset("SendMessage", 1)
    with pytest.raises(ConnectionClosedError):
        sqs.send_message(QueueUrl=url, MessageBody="sent once, answered never")
    assert visible(direct, url) == 1
    sqs.send_message(QueueUrl=url, MessageBody="the next one is answered")
    assert proxy.faulted() == {"reset": 1}


def test_a_stalled_answer_comes_after_the_client_gave_up_on_a_done_request(proxied):
    direct, sqs, proxy, url = proxied
    proxy.inject_stall(ANY, 1, seconds=2)
    with pytest.raises(ReadTimeoutError):
        sqs.send_message(QueueUrl=url, MessageBody="slow")
    assert visible(direct, url) == 1
    assert proxy.faulted() == {"stall": 1}


def test_a_hung_request_is_neither_forwarded_nor_answered(proxied):
    direct, sqs, proxy, url = proxied
    proxy.inject_hang("SendMessage", 1)
    with pytest.raises(ReadTimeoutError):
        sqs.send_message(QueueUrl=url, MessageBody="into the void")
    assert visible(direct, url) == 0
    sqs.send_message(QueueUrl=url, MessageBody="the next one goes through")
    assert visible(direct, url) == 1


def test_injected_errors_for_any_action_hit_the_next_requests_whatever_they_are(proxied):
    _direct, sqs, proxy, url = proxied
    proxy.inject(ANY, 2, 503, "ServiceUnavailable")
    for call in (lambda: sqs.send_message(QueueUrl=url, MessageBody="x"),
                 lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
    sqs.send_message(QueueUrl=url, MessageBody="x")
    assert proxy.faulted() == {"ServiceUnavailable": 2}
    assert proxy.counts() == {"SendMessage": 2, "ReceiveMessage": 1}


def test_a_credentials_endpoint_that_goes_down_resets_requests_until_it_comes_back():
    fetcher = ContainerMetadataFetcher(sleep=lambda _s: None)  # what botocore uses, unslept
    with CredentialsEndpoint(MintedCredentials(60)) as endpoint:
        served = fetcher.retrieve_full_uri(endpoint.uri)
        assert served["Token"] and served["Expiration"]
        endpoint.go_down()
        with pytest.raises(MetadataRetrievalError):
            fetcher.retrieve_full_uri(endpoint.uri)
        endpoint.come_back()
        assert fetcher.retrieve_full_uri(endpoint.uri)["Token"] == served["Token"]
        assert endpoint.refused == ContainerMetadataFetcher.RETRY_ATTEMPTS


def test_the_token_checking_proxy_refuses_expired_tokens_and_passes_the_rest(fauxqs):
    expired = {"old": True, "new": False}
    with TokenCheckingProxy(fauxqs.endpoint_url, expired.get) as proxy:
        def client(token: str | None):
            return boto3.client("sqs", endpoint_url=proxy.endpoint_url, region_name=REGION,
                                aws_access_key_id="ASIAEXAMPLE", aws_secret_access_key="x",
                                aws_session_token=token,
                                config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError) as refused:
            client("old").list_queues()
        assert refused.value.response["Error"]["Code"] == "ExpiredToken"
        for token in ("new", "unknown", None):
            client(token).list_queues()
        assert proxy.faulted() == {"ExpiredToken": 1}


def test_a_burst_limited_in_time_expires_unspent(proxied):
    _direct, sqs, proxy, url = proxied
    burst = 3.0  # seconds: long enough for the first request to come within it
    ends = time.monotonic() + burst
    proxy.inject(ANY, 5, 503, "ServiceUnavailable", within=burst)
    with pytest.raises(ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="in the burst")
    time.sleep(max(0.0, ends - time.monotonic()) + 0.05)  # until the burst is over
    sqs.send_message(QueueUrl=url, MessageBody="after it")
    assert proxy.faulted() == {"ServiceUnavailable": 1}


def test_a_killed_worker_takes_its_pool_processes_with_it(fauxqs, tmp_path):
    """``CeleryWorker.kill`` is a container's SIGKILL: the main process and every pool
    process die at once, with no warm shutdown."""
    queue = create_queue(sqs_client(fauxqs.endpoint_url), "killed-worker", visibility=30, wait=1)
    prepare_worker_dir(tmp_path, worker_document({"killed-worker": queue},
                                                 default_queue="killed-worker"),
                       transport="bundled", tasks_module="ktasks",
                       tasks_source="from celery import Celery\n"
                                    "app = Celery('ktasks')\n"
                                    "app.config_from_object('celeryconfig')\n")
    worker = CeleryWorker("ktasks", worker_env(tmp_path, fauxqs.endpoint_url),
                          tmp_path / "worker.log", pool="prefork", concurrency=2,
                          hostname="killed@%h").start()
    pool = worker.pool_pids()
    assert len(pool) == 2
    assert worker.kill() == -signal.SIGKILL
    assert not worker.running() and worker.pool_pids() == []
    for pid in pool:  # gone, or a zombie left for init to reap
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    assert "Warm shutdown" not in worker.log_text()
