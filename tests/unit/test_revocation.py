"""runtime.revocation on in-process moto: revocations that stay bounded and never fail
for old ones, last until the task they name could still run, are read by each worker
through one client, and survive a malformed entry. (The round trip through a real worker
runs in tests/integration/test_revocation.py.)"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber
from celery import Celery
from celery.worker import state
from moto import mock_aws

from local_aws.fleet import create_result_table, create_revocation_table
from local_aws.moto_server import REGION
from runtime import revocation
from runtime.errors import ConfigError
from runtime.limits import MAX_ETA_SECONDS, MAX_RETENTION

REVOCATIONS, RESULTS = "kit-revocations", "kit-results"
DEADLINE = 30.0


class Clock:
    """``runtime.revocation``'s view of ``time``: wall time that a test moves forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(revocation, "time", fake)
    return fake


@pytest.fixture(autouse=True)
def forget_revoked():
    """Celery's revoked set is process-wide: leave it as it was."""
    before = set(state.revoked)
    yield
    for task_id in set(state.revoked) - before:
        state.revoked.discard(task_id)


@pytest.fixture
def app(monkeypatch):
    """An app configured as the kit renders it, on in-process moto with both tables."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        create_revocation_table(None, REVOCATIONS)
        create_result_table(None, RESULTS)
        celery = Celery("revocations", set_as_current=False)
        celery.conf.update(result_backend=f"dynamodb://@{REGION}/{RESULTS}",
                           kit_revocations={"region": REGION, "table": REVOCATIONS})
        yield celery


def count_items(client, counts: list[int]) -> None:
    """Append to ``counts`` how many items each Query (or GetItem) of ``client`` returned."""
    def returned(parsed, **_):
        items = parsed.get("Items")
        counts.append(len(items) if items is not None else len(parsed.get("Item", {})))
    client.meta.events.register("after-call.dynamodb", returned)


def test_a_revoked_task_is_read_back_until_it_expires(app, clock):
    revocation.revoke(app, "doomed", expires=60)
    assert revocation.revoked_now(app) == {"doomed"}
    clock.now += 61
    assert revocation.revoked_now(app) == set()


def test_a_revocation_lasts_until_a_task_due_at_the_furthest_eta_could_run(app, clock):
    """A task may be due MAX_ETA_SECONDS after it was sent, and its last copy may wait in
    its queue for SQS's longest retention: revoked now, it stays revoked that long (the old
    default, 24 h, let a task due in two days run)."""
    revocation.revoke(app, "due-in-30-days")
    clock.now += MAX_ETA_SECONDS + MAX_RETENTION - 60
    assert revocation.revoked_now(app) == {"due-in-30-days"}


def test_revoking_again_never_shortens_a_revocation(app, clock):
    revocation.revoke(app, "doomed")
    revocation.revoke(app, "doomed", expires=60)
    clock.now += 3600
    assert revocation.revoked_now(app) == {"doomed"}


def test_ten_thousand_expired_revocations_do_not_stop_the_next_revoke_nor_are_read(app, clock):
    """Old revocations neither fill anything (the single item refused its update after
    some 4,500) nor cost the readers anything: the read returns the live entry only."""
    ids = [str(uuid.uuid4()) for _ in range(10_000)]
    for start in range(0, len(ids), 50):
        revocation.revoke(app, ids[start:start + 50], expires=60)
    clock.now += 120
    revocation.revoke(app, "the-next-one", expires=60)
    table = revocation.revocations(app)
    returned: list[int] = []
    count_items(table._client, returned)
    ids_live, malformed = table.live(clock.now)
    assert (ids_live, malformed) == ({"the-next-one"}, [])
    assert returned == [1]


def test_a_malformed_entry_is_skipped_alone_and_logged_once(app, clock, caplog):
    """One bad entry used to make every worker's reader raise (KeyError 'N'), so no
    revocation applied anywhere; now the others apply and the bad one is logged once."""
    table = revocation.revocations(app)
    later = str(int(clock.now) + 600)
    page = {"Items": [
        {"shard": {"S": "revoked"}, "task_id": {"S": "good-1"}, "expires": {"N": later}},
        {"shard": {"S": "revoked"}, "task_id": {"S": "bad-expiry"}, "expires": {"S": "soon"}},
        {"shard": {"S": "revoked"}, "expires": {"N": later}},
        {"shard": {"S": "revoked"}, "task_id": {"S": "good-2"}, "expires": {"N": later}},
    ]}
    reader = revocation.Reader(table)
    with Stubber(table._client) as stub, caplog.at_level(logging.INFO, "runtime.revocation"):
        stub.add_response("query", page)
        stub.add_response("query", page)
        reader.poll(clock.now)
        reader.poll(clock.now)
    assert {"good-1", "good-2"} <= set(state.revoked)
    assert "bad-expiry" not in state.revoked
    skipped = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert "'soon'" in skipped[0] or "'soon'" in skipped[1]
    applied = [r.getMessage() for r in caplog.records if "new revocation" in r.getMessage()]
    assert applied == ["applying 2 new revocation(s): good-1, good-2"]


def test_a_worker_reader_builds_one_client_for_all_its_polls(app, monkeypatch):
    """It used to build a boto3 client every 2 s (a log line each time on an emulator)."""
    made: list[object] = []
    calls: list[int] = []
    enough = threading.Event()
    real_client = boto3.client

    def client(*args, **kwargs):
        made.append(args)
        made_client = real_client(*args, **kwargs)

        def called(**_):
            calls.append(1)
            if len(calls) >= 5:
                enough.set()
        made_client.meta.events.register("before-call.dynamodb", called)
        return made_client

    monkeypatch.setattr(revocation.boto3, "client", client)
    monkeypatch.setattr(revocation, "POLL_SECONDS", 0.01)
    revocation._on_worker_ready(sender=SimpleNamespace(app=app))
    try:
        assert enough.wait(DEADLINE), f"the reader polled {len(calls)} times"
    finally:
        revocation._on_worker_shutdown()
        revocation._reader._thread.join(DEADLINE)
    assert len(made) == 1


def test_without_a_revocations_table_revoking_says_what_is_missing_not_the_backend_url():
    app = Celery("bare", set_as_current=False)
    app.conf.result_backend = "redis://:s3cret@cache:6379/0"
    with pytest.raises(ConfigError) as raised:
        revocation.revoked_now(app)
    assert "names none" in str(raised.value) and "kit_revocations" in str(raised.value)
    assert "s3cret" not in str(raised.value)
