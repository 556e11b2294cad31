"""runtime.credentials: one refresher per role, shared, refreshed before expiry."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import botocore.session
import pytest
from botocore.exceptions import ClientError

from runtime.credentials import RoleCredentials, session_name
from runtime.errors import CredentialsError

ROLE = "arn:aws:iam::123456789012:role/broker"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeSts(RoleCredentials):
    """AssumeRole answered locally: each token expires token_timeout after issue."""

    def __init__(self, clock: FakeClock, **kwargs) -> None:
        session = botocore.session.get_session()
        session.set_credentials("AKIDBASE", "base-secret")
        super().__init__(region="us-east-1", clock=clock, base_session=session, **kwargs)
        self.clock = clock
        self.requests: list[dict] = []
        self.expiry_of: dict[str, datetime] = {}

    def _assume_role_call(self, kwargs):
        self.requests.append(kwargs)
        n = len(self.requests)
        expiry = self.clock() + timedelta(seconds=kwargs["DurationSeconds"])
        self.expiry_of[f"token{n}"] = expiry
        return {"Credentials": {"AccessKeyId": f"ASIATOKEN{n}", "SecretAccessKey": f"secret{n}",
                                "SessionToken": f"token{n}", "Expiration": expiry}}


def test_three_queues_share_one_refresher_and_never_sign_with_an_expired_token():
    clock = FakeClock()
    creds = FakeSts(clock, token_timeout=900)
    clients = [creds.client("sqs", ROLE) for _queue in ("a", "b", "c")]
    assert clients[0] is clients[1] is clients[2]
    expired_uses = 0
    for _step in range(3 * 900 // 30):  # three token lifetimes, a request every 30 s
        clock.advance(30)
        for client in clients:
            token = client._request_signer._credentials.get_frozen_credentials().token
            if creds.expiry_of[token] <= clock():
                expired_uses += 1
    assert expired_uses == 0
    # one AssumeRole per refresh window, not one per queue or per request
    assert 3 <= len(creds.requests) <= 6


def test_refresh_happens_before_expiry_not_at_it():
    clock = FakeClock()
    creds = FakeSts(clock, token_timeout=900)
    client = creds.client("sqs", ROLE)
    first = client._request_signer._credentials.get_frozen_credentials().token
    clock.advance(900 - 299)  # inside the advisory window (a third of the lifetime)
    assert client._request_signer._credentials.get_frozen_credentials().token != first


def frozen(client):
    """The credentials the client signs with now (fetching them if it must)."""
    return client._request_signer._credentials.get_frozen_credentials()


def test_each_role_has_its_own_refresher():
    creds = FakeSts(FakeClock())
    other = "arn:aws:iam::123456789012:role/reports-only"
    assert creds.client("sqs", ROLE) is not creds.client("sqs", other)
    assert creds.credentials(ROLE) is not creds.credentials(other)
    assert creds.requests == []  # a client is made without a request
    frozen(creds.client("sqs", ROLE))
    frozen(creds.client("sqs", other))
    assert {r["RoleArn"] for r in creds.requests} == {ROLE, other}


def test_profiles_share_the_role_s_one_refresher():
    creds = FakeSts(FakeClock())
    receive, ops = creds.client("sqs", ROLE, "receive"), creds.client("sqs", ROLE, "ops")
    assert receive is not ops
    assert receive._request_signer._credentials is ops._request_signer._credentials


def test_a_slow_sts_for_one_role_does_not_hold_up_another_role_or_the_default_chain():
    """Issue 13 item 8: no network call under a lock shared by roles."""
    in_sts, release = threading.Event(), threading.Event()

    class SlowSts(FakeSts):
        def _assume_role_call(self, kwargs):
            if kwargs["RoleArn"] == ROLE:
                in_sts.set()
                release.wait(10)
            return super()._assume_role_call(kwargs)

    creds = SlowSts(FakeClock())
    slow = threading.Thread(target=lambda: frozen(creds.client("sqs", ROLE)))
    slow.start()
    assert in_sts.wait(5)
    started = time.monotonic()
    frozen(creds.client("sqs"))  # the default chain
    frozen(creds.client("sqs", "arn:aws:iam::123456789012:role/other"))
    took = time.monotonic() - started
    release.set()
    slow.join()
    assert took < 5  # the slow role's STS answers after 10 s


def test_a_role_whose_sts_is_down_is_asked_again_only_after_a_backoff():
    """Issue 13 item 8: with STS down, requests fail at once instead of each
    waiting on STS."""
    class DownSts(FakeSts):
        def _assume_role_call(self, kwargs):
            self.requests.append(kwargs)
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}}, "AssumeRole")

    now = [100.0]
    creds = DownSts(FakeClock(), monotonic=lambda: now[0])
    client = creds.client("sqs", ROLE)
    for _ in range(5):
        with pytest.raises(CredentialsError, match="ServiceUnavailable"):
            frozen(client)
    assert len(creds.requests) == 1
    now[0] += 1.1
    with pytest.raises(CredentialsError):
        frozen(client)
    assert len(creds.requests) == 2


def test_no_role_means_the_default_chain():
    creds = FakeSts(FakeClock())
    assert frozen(creds.client("sqs")).access_key == "AKIDBASE"
    assert creds.requests == []


def test_session_name_carries_host_and_pid_and_external_id_is_sent():
    creds = FakeSts(FakeClock(), external_id="fleet-7", token_timeout=1800)
    frozen(creds.client("sqs", ROLE))
    request = creds.requests[0]
    assert request["ExternalId"] == "fleet-7"
    assert request["DurationSeconds"] == 1800
    assert request["RoleSessionName"] == session_name()
    assert request["RoleSessionName"].endswith(f"-{os.getpid()}")
    assert socket.gethostname()[:8] in request["RoleSessionName"]


def test_session_name_fits_sts_limits():
    name = session_name()
    assert len(name) <= 64
    assert name.startswith("celery-")


def test_a_role_that_cannot_be_assumed_is_a_typed_error():
    class Denied(FakeSts):
        def _assume_role_call(self, kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "AssumeRole")

    client = Denied(FakeClock()).client("sqs", ROLE)
    with pytest.raises(CredentialsError, match=r"sts:AssumeRole.*AccessDenied.*trust policy"):
        frozen(client)
