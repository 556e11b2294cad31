"""Malformed messages (issue 19 item 3) and far ETAs (item 6): whatever a sender puts in
a message, the bundled transport sends what it cannot use to the DLQ with its reason,
and one bad message never stops the worker. Driven through the channel's real receive
path (``_on_received``: ``_accept``, ``_decode``, kombu's ``Message``, the consumer
callback) and its real lane, with a stub SQS client at the AWS boundary."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from runtime.errors import EtaTooFar
from runtime.lane import QueueLane
from runtime.limits import MAX_ETA_SECONDS
from runtime.transport import Transport
from tests.unit.stub_sqs import StubSqs

QUEUE = "work"
URL = f"https://sqs.example/123/{QUEUE}"
DLQ = f"{URL}-dlq"


class Hub:
    """What the receive path asks of Celery's event loop; nothing runs later."""

    def call_soon(self, callback: Any, *args: Any) -> None: ...

    def call_later(self, delay: float, callback: Any, *args: Any) -> Any:
        return Hub()

    def cancel(self) -> None: ...

    def add_reader(self, fd: int, callback: Any) -> None: ...

    def remove_reader(self, fd: int) -> None: ...


class Inline(Executor):
    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class Consumer:
    """Stands in for Celery's task handler: decodes the task as JSON (as Celery accepts
    by default), unpacks it as protocol 2 does, and acks; whatever fails raises, as
    Celery's strategies do on a task they cannot read."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.fail_with: Exception | None = None
        """Raised on the next delivery."""
        self.ack_first = False
        self.ack_undecodable = False

    def __call__(self, message: Any) -> None:
        if self.ack_first:
            message.ack()
        error, self.fail_with = self.fail_with, None  # for the next delivery only
        if error is not None:
            raise error
        message.accept = {"application/json"}
        try:
            _args, _kwargs, _embed = message.payload
        except Exception:
            if not self.ack_undecodable:
                raise
            message.ack()  # as Celery's on_decode_error does, after logging it
            return
        _task_id = message.headers["id"]
        message.ack()
        self.acked.append(message.delivery_tag)


class Setup:
    def __init__(self, channel: Any, stub: StubSqs, lane: QueueLane, consumer: Consumer
                 ) -> None:
        self.channel, self.stub, self.lane, self.consumer = channel, stub, lane, consumer

    def receive(self, *messages: dict[str, Any]) -> None:
        """One receive's batch, as the receive thread hands it to the event loop, then the
        lane's thread: a pass, and the next one, which deletes what the first moved."""
        self.channel._on_received(QUEUE, QUEUE, URL, 10, list(messages), callback=None)
        self.lane._tick()
        self.lane._tick()

    def sent_to(self, url: str) -> list[dict[str, Any]]:
        """Each message sent to ``url``, as its SendMessageBatch entry (the lane's moves)."""
        return [entry for action, kw in self.stub.calls
                if action == "SendMessageBatch" and kw["QueueUrl"] == url
                for entry in kw["Entries"]]

    def reason_of(self, message: dict[str, Any]) -> str | None:
        """``kit_reason`` of this message's DLQ copy, if it was sent there."""
        found = [kw for kw in self.sent_to(DLQ) if kw["MessageBody"] == message["Body"]
                 and kw.get("MessageAttributes", {}).get("kit_reason")]
        return found[0]["MessageAttributes"]["kit_reason"]["StringValue"] if found else None

    def deleted(self) -> list[str]:
        return [e["ReceiptHandle"] for action, kw in self.stub.calls
                if action == "DeleteMessageBatch" for e in kw["Entries"]]

    def reset(self) -> None:
        self.stub.calls.clear()
        self.consumer.acked.clear()
        self.consumer.fail_with, self.consumer.ack_first = None, False
        self.consumer.ack_undecodable = False


@contextmanager
def consuming() -> Iterator[Setup]:
    """A channel consuming ``work`` (DLQ ``work-dlq``) through a consumer like Celery's,
    with its lane ticked by hand and every SQS call answered by a stub."""
    connection = Connection(transport=Transport, transport_options={
        "region": "us-east-1",
        "predefined_queues": {QUEUE: {"url": URL, "dead_letter_queue": DLQ}}})
    channel = connection.channel()
    channel.hub = Hub()
    stub = StubSqs()
    channel.sqs = lambda *_a, **_k: stub
    lane = QueueLane(queue=QUEUE, url=URL, visibility_timeout=60, client=lambda _p: stub,
                     dead_letter_url=DLQ, flush_delay=0, delete_executor=Inline())
    lane._ticker.wake = lambda: None  # ticked by hand: the test sees each call in order
    channel._lanes[URL] = lane
    channel._checked.add(URL)
    consumer = Consumer()
    channel.basic_consume(QUEUE, False, consumer, "consumer-1")
    try:
        yield Setup(channel, stub, lane, consumer)
    finally:
        channel._lanes.clear()
        channel.qos._delivered.clear()
        if channel._receiver is not None:
            channel._receiver.close()


@pytest.fixture
def kit(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    with consuming() as setup:
        yield setup


def sqs_message(envelope: Any, *, raw: str | None = None, b64: bool = False,
                attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message as ReceiveMessage returns it, its body the JSON of ``envelope`` (or
    ``raw``), optionally base64-encoded as a whole (kombu's ``sqs_base64_encoding``)."""
    body = raw if raw is not None else json.dumps(envelope)
    if b64:
        body = base64.b64encode(body.encode()).decode()
    handle = uuid.uuid4().hex
    return {"MessageId": f"id-{handle[:8]}", "ReceiptHandle": handle, "Body": body,
            "Attributes": {"ApproximateReceiveCount": "1"},
            "MessageAttributes": attributes or {}}


def task(task_id: str = "t-1", **headers: Any) -> dict[str, Any]:
    """A task envelope as Celery (protocol 2) and kombu write it."""
    body = base64.b64encode(json.dumps([["x"], {}, {}]).encode()).decode()
    return {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
            "headers": {"id": task_id, "task": "t.add", "eta": None, "expires": None,
                        **headers},
            "properties": {"body_encoding": "base64", "delivery_tag": "x",
                           "delivery_info": {"exchange": "", "routing_key": QUEUE}}}


def in_(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


# the finding, and each field the transport or kombu reads -----------------------------------
def test_a_task_whose_headers_are_a_list_goes_to_the_dlq_and_the_batch_goes_on(kit):
    bad = sqs_message({**task("bad"), "headers": ["id", "bad"]})
    good = sqs_message(task("good"))
    kit.receive(bad, good)
    assert kit.reason_of(bad) == \
        "undecodable: not a kombu message (headers is an array, not an object)"
    assert kit.consumer.acked == [good["ReceiptHandle"]]
    assert set(kit.deleted()) == {bad["ReceiptHandle"], good["ReceiptHandle"]}


@pytest.mark.parametrize("change, reason", [
    (lambda e: e.pop("properties"), "properties is missing, not an object"),
    (lambda e: e.update(properties="p"), "properties is text, not an object"),
    (lambda e: e.pop("headers"), "headers is missing, not an object"),
    (lambda e: e["properties"].update(delivery_info=[1]),
     "properties.delivery_info is an array, not an object"),
    (lambda e: e["properties"]["delivery_info"].update(routing_key=["a"]),
     "properties.delivery_info.routing_key is an array, not text"),
    (lambda e: e["properties"]["delivery_info"].update(consumer_tag={}),
     "properties.delivery_info.consumer_tag is an object, not text"),
    (lambda e: e["headers"].update(eta=12), "headers.eta is a number, not text"),
    (lambda e: e["headers"].update(expires=[]), "headers.expires is an array, not text"),
    (lambda e: e["headers"].update(compression=1), "headers.compression is a number, not text"),
    (lambda e: e.update({"content-type": 1}), "content-type is a number, not text"),
    (lambda e: e.update({"content-encoding": {}}), "content-encoding is an object, not text"),
    (lambda e: e["properties"].update(body_encoding=7),
     "properties.body_encoding is a number, not text"),
    (lambda e: e["properties"].update(body_encoding="rot13"),
     "properties.body_encoding 'rot13' is not base64 or utf-8"),
    (lambda e: e.update(body="@@not base64@@="),
     "the body is not base64, as properties.body_encoding says"),
    (lambda e: e.update(body=[1, 2]), "a base64 body is an array, not text"),
], ids=["no-properties", "properties-text", "no-headers", "delivery-info-list",
        "routing-key-list", "consumer-tag-object", "eta-number", "expires-list",
        "compression-number", "content-type-number", "content-encoding-object",
        "body-encoding-number", "body-encoding-unknown", "body-not-base64", "body-list"])
def test_each_field_the_transport_or_kombu_reads_is_checked_and_named(kit, change, reason):
    envelope = task("bad")
    change(envelope)
    bad = sqs_message(envelope)
    kit.receive(bad)
    assert kit.reason_of(bad) == f"undecodable: not a kombu message ({reason})"
    assert kit.consumer.acked == []


@pytest.mark.parametrize("raw, reason", [
    ("{not json", "the body is not JSON: "),
    ("[1, 2]", "the body is an array, not a JSON object"),
    ('{"x": {"__type__": "decimal", "__value__": "nan?"}}', "the body is not JSON: "),
], ids=["not-json", "array", "bad-kombu-type"])
def test_a_body_that_is_not_a_kombu_envelope_goes_to_the_dlq_with_its_reason(kit, raw, reason):
    bad = sqs_message(None, raw=raw)
    kit.receive(bad)
    assert kit.reason_of(bad).startswith(f"undecodable: not a kombu message ({reason}")


# what kombu and the consumer do after the transport delivers -------------------------------
def test_a_task_its_consumer_fails_on_goes_to_the_dlq_and_the_next_is_delivered(kit, caplog):
    """Celery's strategy raises on a task it cannot read (here: no ``id``, a KeyError in
    its Request): the message goes to the DLQ with the error, logged with its id."""
    bad = sqs_message(task("bad"))
    kit.consumer.fail_with = KeyError("id")
    with caplog.at_level("ERROR", logger="runtime.transport"):
        kit.receive(bad)
    kit.consumer.fail_with = None
    good = sqs_message(task("good"))
    kit.receive(good)
    assert kit.reason_of(bad) == "its consumer failed on it: KeyError('id')"
    assert f"message {bad['MessageId']} of queue 'work': its consumer failed on it" in \
        caplog.text
    assert kit.consumer.acked == [good["ReceiptHandle"]]
    assert bad["ReceiptHandle"] not in kit.channel.qos._delivered  # no prefetch slot kept


def test_a_consumer_that_acked_before_failing_keeps_its_ack(kit):
    message = sqs_message(task("acked"))
    kit.consumer.ack_first, kit.consumer.fail_with = True, RuntimeError("after the ack")
    kit.receive(message)
    assert kit.sent_to(DLQ) == []
    assert kit.deleted() == [message["ReceiptHandle"]]


def test_a_plain_kombu_consumer_s_failure_is_contained_too(kit, monkeypatch):
    """``drain_events`` (gevent, eventlet, plain kombu) delivers through the same guard."""
    bad, good = sqs_message(task("bad")), sqs_message(task("good"))
    monkeypatch.setattr(kit.channel, "_receive", lambda *_a: [bad, good])
    kit.consumer.fail_with = ValueError("first")
    kit.channel._get_bulk(QUEUE)
    kit.lane._tick()
    kit.lane._tick()
    assert kit.reason_of(bad) == "its consumer failed on it: ValueError('first')"
    assert kit.consumer.acked == [good["ReceiptHandle"]]


# every shape: a property over message shapes -----------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


def well_formed_or_not(good: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(good, good, JSON)


TIMES = st.one_of(
    st.none(),
    st.floats(min_value=-1e9, max_value=1e10).map(in_),  # past, near, parked, beyond 30 days
    st.datetimes(timezones=st.none() | st.just(timezone.utc)).map(datetime.isoformat),
    st.text(max_size=12))
TASK_BODY = st.one_of(
    st.just(base64.b64encode(b'[["x"], {}, {}]').decode()),
    JSON.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.text(max_size=16), JSON)
HEADERS = st.fixed_dictionaries({"id": well_formed_or_not(st.text(min_size=1, max_size=8))},
                                optional={
    "task": well_formed_or_not(st.just("t.add")),
    "eta": well_formed_or_not(TIMES), "expires": well_formed_or_not(TIMES),
    "compression": well_formed_or_not(st.sampled_from(["application/x-gzip", "zz"])),
    "retries": JSON})
DELIVERY_INFO = st.fixed_dictionaries({}, optional={
    key: well_formed_or_not(st.text(max_size=6))
    for key in ("exchange", "routing_key", "consumer_tag")})
PROPERTIES = st.fixed_dictionaries({}, optional={
    "body_encoding": well_formed_or_not(st.sampled_from(["base64", "utf-8", "UTF-8", "hex"])),
    "delivery_info": well_formed_or_not(DELIVERY_INFO), "delivery_tag": JSON,
    "priority": JSON})
ENVELOPE = st.fixed_dictionaries({}, optional={
    "body": TASK_BODY,
    "content-type": well_formed_or_not(st.sampled_from(
        ["application/json", "application/x-python-serialize", "text/plain"])),
    "content-encoding": well_formed_or_not(st.sampled_from(["utf-8", "binary"])),
    "headers": well_formed_or_not(HEADERS), "properties": well_formed_or_not(PROPERTIES)})
ATTRIBUTES = st.dictionaries(
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,10}\Z"),
    st.one_of(st.text(min_size=1, max_size=8).map(
                  lambda v: {"DataType": "String", "StringValue": v}),
              st.integers().map(lambda v: {"DataType": "Number", "StringValue": str(v)}),
              st.binary(min_size=1, max_size=8).map(
                  lambda v: {"DataType": "Binary.raw", "BinaryValue": v})),
    max_size=9)
MESSAGES = st.one_of(
    st.builds(lambda e, b64, a: sqs_message(e, b64=b64, attributes=a), ENVELOPE,
              st.booleans(), ATTRIBUTES),
    st.builds(lambda raw, b64: sqs_message(None, raw=raw, b64=b64),
              st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),  # SQS: Unicode
              st.booleans()),
    st.builds(lambda v: sqs_message(v), JSON))


@pytest.fixture(scope="module")
def shared_kit() -> Iterator[Setup]:
    """One channel for every example (hypothesis runs many per test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "unit")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
        with consuming() as setup:
            yield setup


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(message=MESSAGES, consumer_fails=st.booleans())
def test_any_message_is_delivered_parked_or_dead_lettered_and_the_next_one_runs(
        shared_kit, message, consumer_fails):
    """Whatever its shape: nothing escapes to the event loop; the message ends in exactly
    one place (acked by its consumer, parked, or in the DLQ with a reason); a good task
    received in the same batch is delivered and acked."""
    kit = shared_kit
    kit.reset()
    good = sqs_message(task("good"))
    kit.consumer.fail_with = RuntimeError("refused") if consumer_fails else None
    kit.channel._on_received(QUEUE, QUEUE, URL, 10, [message], callback=None)
    kit.consumer.fail_with = None
    kit.receive(good)
    handle = message["ReceiptHandle"]
    reason = kit.reason_of(message)
    parked = [kw for kw in kit.sent_to(URL) if kw["MessageBody"] == message["Body"]]
    acked = handle in kit.consumer.acked
    assert [bool(reason), bool(parked), acked].count(True) == 1, (reason, parked, acked)
    if reason is not None or acked:
        assert handle in kit.deleted()
    assert kit.consumer.acked[-1] == good["ReceiptHandle"]
    assert good["ReceiptHandle"] in kit.deleted()
    assert not kit.lane.holds(handle) or kit.lane._held[handle].done


# far ETAs (item 6) --------------------------------------------------------------------------
def test_a_task_due_beyond_the_maximum_goes_to_the_dlq_instead_of_being_parked(kit):
    message = sqs_message(task("far", eta="9999-12-31T00:00:00+00:00"))
    kit.receive(message)
    reason = kit.reason_of(message)
    assert reason is not None and reason.startswith("ETA too far: ETA 9999-12-31T00:00:00+00:00")
    assert reason.endswith(f"beyond the maximum of {MAX_ETA_SECONDS} s (30 days)")
    assert kit.sent_to(URL) == [] and kit.consumer.acked == []


def test_a_task_due_within_the_maximum_is_still_parked(kit):
    message = sqs_message(task("parked", eta=in_(MAX_ETA_SECONDS - 3600)))
    kit.receive(message)
    assert [kw["DelaySeconds"] for kw in kit.sent_to(URL)] == [900]
    assert kit.sent_to(DLQ) == []


@pytest.mark.parametrize("eta", [in_(86_400), "9999-12-31T00:00:00+00:00"],
                         ids=["parkable", "beyond-the-maximum"])
def test_an_expired_task_is_handed_to_celery_to_revoke_not_parked(kit, caplog, eta):
    """Celery discards an expired task before it looks at its ETA, and records it
    REVOKED (expired): parking it (or dead-lettering it) would only hide that."""
    message = sqs_message(task("expired", eta=eta, expires=in_(-60)))
    with caplog.at_level("INFO", logger="runtime.transport"):
        kit.receive(message)
    assert kit.consumer.acked == [message["ReceiptHandle"]]
    assert kit.sent_to(URL) == [] and kit.sent_to(DLQ) == []
    assert "task expired (t.add) of queue 'work' expired at" in caplog.text


def test_a_task_expiring_later_is_parked_until_then(kit):
    message = sqs_message(task("later", eta=in_(86_400), expires=in_(3600)))
    kit.receive(message)
    assert [kw["DelaySeconds"] for kw in kit.sent_to(URL)] == [900]


@pytest.mark.parametrize("queue", ["work", "orders.fifo"])
def test_publishing_a_task_due_beyond_the_maximum_is_refused_before_any_request(
        kit, monkeypatch, queue):
    requests: list[Any] = []
    monkeypatch.setattr(kit.channel, "sqs", lambda *a, **k: requests.append(a))
    monkeypatch.setattr(kit.channel, "_new_queue", lambda *a, **k: requests.append(a))
    eta = in_(MAX_ETA_SECONDS + 60)
    with pytest.raises(EtaTooFar, match=rf"SendMessage on queue '{queue}' failed: EtaTooFar "
                       rf"\(ETA {eta[:16]}.* s away, beyond the maximum of 2592000 s "
                       r"\(30 days\)\); the bundled transport keeps a task for at most 30 days"):
        kit.channel._put(queue, {"headers": {"id": "t1", "eta": eta}, "properties": {}})
    assert requests == []



def test_a_task_its_consumer_cannot_decode_and_acks_goes_to_the_dlq_not_away(kit):
    """Celery logs a body it cannot decode and acks it (``on_decode_error``): the ack of a
    message whose decode failed sends it to the DLQ instead of deleting it."""
    envelope = task("garbled")
    envelope["body"] = base64.b64encode(b"{not json").decode()
    message = sqs_message(envelope)
    kit.consumer.ack_undecodable = True
    kit.receive(message)
    assert kit.reason_of(message).startswith("undecodable by its consumer: DecodeError(")
    assert kit.deleted() == [message["ReceiptHandle"]]  # after its DLQ copy was sent
