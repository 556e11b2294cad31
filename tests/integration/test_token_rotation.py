"""Three queues live through several STS token lifetimes with a real worker; and a
worker whose container-credentials endpoint is down for longer than a token lives
heals by itself once it is back.

moto enforces IAM here, shortens every STS session (a 900 s token lasts 13.5 s) and answers an expired token with ExpiredToken, as AWS does
(``local_aws.moto_main``). The worker's base identity is an IAM user that may
only assume the broker role; the broker role alone may use the queues. Tasks
are published throughout ~2.5 token lifetimes (two refreshes at least); every one
runs exactly once and no request is refused for an expired token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from local_aws.celery_worker import CREDENTIAL_VARIABLES, CeleryWorker, role_environment
from local_aws.container_credentials import CredentialsEndpoint, MintedCredentials
from local_aws.counting_proxy import TokenCheckingProxy
from local_aws.fleet import create_queue, prepare_worker_dir, worker_document
from local_aws.moto_server import REGION, MotoServer
from local_aws.operator import create_operator
from tests.integration.fleet import RECORDING_TASKS, lines, publish, recording_fleet, wait_for

pytestmark = pytest.mark.integration

TOKEN_SECONDS = 900
SCALE = 0.015  # 900 s tokens last 13.5 s
LIFETIMES = 2.5
QUEUES = ("alpha", "beta", "gamma")


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture
def enforcing(tmp_path):
    with MotoServer(enforce_iam=True, log_path=tmp_path / "moto.log",
                    extra_env={"KIT_MOTO_STS_TIME_SCALE": str(SCALE)}) as moto:
        yield moto, create_operator(moto.endpoint_url)


@pytest.mark.fault
def test_three_queues_survive_token_rotation(enforcing, tmp_path):
    moto, operator = enforcing
    session = operator.session()
    iam = session.client("iam", endpoint_url=moto.endpoint_url)
    sqs = session.client("sqs", endpoint_url=moto.endpoint_url)
    queues = {name: create_queue(sqs, name, visibility=60, wait=1) for name in QUEUES}
    arns = [q["arn"] for q in queues.values()] + [q["dead_letter_queue"]["arn"]
                                                   for q in queues.values()]

    worker_user = iam.create_user(UserName="worker-base")["User"]
    key = iam.create_access_key(UserName="worker-base")["AccessKey"]
    trust = policy({"Effect": "Allow", "Action": "sts:AssumeRole",
                    "Principal": {"AWS": worker_user["Arn"]}})
    broker = iam.create_role(RoleName="broker", AssumeRolePolicyDocument=trust,
                             MaxSessionDuration=3600)["Role"]["Arn"]
    iam.put_role_policy(RoleName="broker", PolicyName="queues", PolicyDocument=policy(
        {"Effect": "Allow", "Resource": arns, "Action": [
            "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes", "sqs:SendMessage"]}))
    iam.put_user_policy(UserName="worker-base", PolicyName="assume", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": broker}))

    document = worker_document(queues, default_queue="alpha")
    document["sts"] = {"role_arn": broker, "token_timeout": TOKEN_SECONDS}
    prepare_worker_dir(tmp_path, document, transport="bundled", tasks_module="ttasks",
                       tasks_source=RECORDING_TASKS)
    runs = tmp_path / "runs.txt"
    runs.touch()
    env = role_environment(tmp_path, {
        "AWS_ENDPOINT_URL": moto.endpoint_url, "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "KIT_TEST_RUNS": str(runs)})

    duration = TOKEN_SECONDS * SCALE * LIFETIMES
    rounds = int(duration / 1.5)
    publisher = ("import time\nfrom ttasks import quick\n"
                 f"for r in range({rounds}):\n"
                 f"    for q in {list(QUEUES)!r}:\n"
                 "        quick.apply_async((f'{q}-{r}',), queue=q)\n"
                 "    time.sleep(1.5)\n")
    with CeleryWorker("ttasks", env, tmp_path / "worker.log", pool="threads", concurrency=2,
                      queues=list(QUEUES)) as worker:
        started = time.monotonic()
        sent = subprocess.run([sys.executable, "-c", publisher], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert sent.returncode == 0, sent.stderr[-3000:]
        expected = {f"quick {q}-{r}" for r in range(rounds) for q in QUEUES}
        wait_for(lambda: set(lines(runs)) >= expected, 60, "every task to run")
        elapsed = time.monotonic() - started
        log = worker.log_text()

    assert elapsed >= TOKEN_SECONDS * SCALE * 2  # really lived through two lifetimes
    assert sorted(lines(runs)) == sorted(expected)  # each exactly once, none lost
    assert "ExpiredToken" not in log and "CredentialsError" not in log
    assumed = log.count(f"assumed {broker} as celery-")
    # refreshed before each expiry, once for all three queues (not once per queue)
    assert 3 <= assumed <= 2 * LIFETIMES + 2


@pytest.mark.fault
def test_a_credentials_outage_longer_than_a_token_heals_without_a_restart(fauxqs, tmp_path):
    """The worker's only identity is a container-credentials endpoint serving 12 s
    tokens; it goes down for 20 s, so the token in use expires and SQS (a proxy that
    checks tokens) refuses it. Once the endpoint is back the same worker process gets a
    new token and runs every task, those published during the outage too."""
    minted = MintedCredentials(12, refresh_before=4)
    with CredentialsEndpoint(minted) as endpoint, \
            TokenCheckingProxy(fauxqs.endpoint_url, minted.expired) as proxy:
        _sqs, _queue, publisher_env, runs = recording_fleet(
            fauxqs.endpoint_url, proxy.endpoint_url, tmp_path, visibility=30)
        worker_env = {**{k: v for k, v in publisher_env.items()
                         if k not in CREDENTIAL_VARIABLES}, **endpoint.environment()}
        with CeleryWorker("ttasks", worker_env, tmp_path / "worker.log", pool="threads",
                          concurrency=2) as worker:
            publish(publisher_env, "from ttasks import quick\n"
                                   "[quick.delay(f'before {i}') for i in range(5)]", tmp_path)
            wait_for(lambda: len(lines(runs)) == 5, 30, "the first tasks")
            endpoint.go_down()
            publish(publisher_env, "from ttasks import quick\n"
                                   "[quick.delay(f'during {i}') for i in range(5)]", tmp_path)
            wait_for(lambda: proxy.faulted().get("ExpiredToken"), 40,
                     "the worker's token to expire and be refused")
            publish(publisher_env, "from ttasks import quick\n"
                                   "[quick.delay(f'refused {i}') for i in range(5)]", tmp_path)
            endpoint.come_back()
            wait_for(lambda: len(lines(runs)) >= 15, 60, "every task after the outage")
            assert worker._process.poll() is None  # healed, not restarted
        assert endpoint.refused > 0
        assert sorted(lines(runs)) == sorted(f"quick {when} {i}" for i in range(5)
                                             for when in ("before", "during", "refused"))
