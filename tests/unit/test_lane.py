"""runtime.lane: one queue's acks, extensions, releases and dead-letter moves, in
order, on its own thread; nothing dropped on a failure that may pass."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor, Future

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from runtime import events
from runtime.errors import CredentialsError
from runtime.lane import QueueLane
from runtime.visibility import MAX_HOLD_SECONDS
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/work"
DLQ = URL + "-dlq"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Inline(Executor):
    """Runs each delete batch at once, on the ticking thread: hand-ticked tests stay in
    step."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def lane(stub: StubSqs, *, clock: Clock | None = None, delay: float = 3600.0,
         vt: int = 60, dlq: str | None = DLQ, shutdown: StubSqs | None = None,
         inline_deletes: bool | None = None) -> QueueLane:
    """A lane on ``stub``; with ``clock``, ticked by hand and (unless told otherwise)
    deleting inline."""
    clients = {"ops": stub, "shutdown": shutdown or stub}
    inline = clock is not None if inline_deletes is None else inline_deletes
    q = QueueLane(queue="work", url=URL, visibility_timeout=vt,
                  client=lambda profile: clients[profile], dead_letter_url=dlq,
                  flush_delay=delay, clock=clock or time.monotonic,
                  delete_executor=Inline() if inline else None)
    if clock is not None:  # the test ticks by hand, on its fake clock: no thread of its own
        q._ticker.wake = lambda: None
    return q


def entries(stub: StubSqs, action: str) -> list[dict]:
    return [e for a, kw in stub.calls if a == action for e in kw["Entries"]]


def raising(error: Exception, times: int):
    calls = {"n": 0}

    def respond(action, _kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return {}
    return respond


# deletes ------------------------------------------------------------------------------
def test_acks_are_deleted_ten_at_a_time():
    stub = StubSqs()
    q = lane(stub)
    for i in range(25):
        q.ack(f"r{i}")
    q.close(timeout=5)
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10, 10, 5]
    assert sorted(e["ReceiptHandle"] for e in entries(stub, "DeleteMessageBatch")) == \
        sorted(f"r{i}" for i in range(25))
    assert q.deleted == 25


def test_pending_acks_are_sent_after_the_delay_without_shutdown():
    sent = threading.Event()
    stub = StubSqs(lambda _a, _kw: sent.set() or {})
    q = lane(stub, delay=0.05)
    q.ack("only")
    assert sent.wait(timeout=10)
    q.close(timeout=5)
    assert stub.actions() == ["DeleteMessageBatch"]


def test_a_full_batch_goes_at_once_and_the_remainder_waits_for_its_delay():
    stub = StubSqs()
    q = lane(stub, delay=3600.0)
    for i in range(13):
        q.ack(f"r{i}")  # the tenth wakes the lane, long before the delay
    deadline = time.monotonic() + 10
    while not stub.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time enough for a wrongly eager lane to send the other three
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10]
    q.close(timeout=5)  # shutdown sends the remainder
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10, 3]


def test_a_server_side_entry_failure_is_retried():
    answers = iter([{"Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}]}, {}])
    stub = StubSqs(lambda _a, _kw: next(answers))
    q = lane(stub)
    q.ack("ok")
    q.ack("retry-me")
    q.close(timeout=5)
    assert [e["ReceiptHandle"] for e in stub.calls[1][1]["Entries"]] == ["retry-me"]
    assert q.deleted == 2


def test_a_sender_fault_is_logged_with_queue_and_code_not_retried(caplog):
    stub = StubSqs(lambda _a, _kw: {"Failed": [
        {"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]})
    q = lane(stub)
    q.ack("stale")
    with caplog.at_level(logging.WARNING):
        q.close(timeout=5)
    assert len(stub.calls) == 1
    assert "queue 'work' (ReceiptHandleIsInvalid)" in caplog.text
    assert "deliver them again" in caplog.text


@pytest.mark.parametrize("error", [
    ClientError({"Error": {"Code": "RequestThrottled"}}, "DeleteMessageBatch"),
    EndpointConnectionError(endpoint_url=URL),
    CredentialsError("*", "sts:AssumeRole", "RequestTimeout"),
], ids=lambda e: type(e).__name__)
def test_a_transient_failure_keeps_the_acks_and_retries_them(error, caplog):
    """Issue 13 items 1 and 9: credentials and connection errors are not final."""
    stub, clock = StubSqs(raising(error, 2)), Clock()
    q = lane(stub, clock=clock, delay=0.0)
    q.ack("r")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            q._tick()
            clock.now += 60
    assert len(stub.calls) == 3
    assert q.deleted == 1
    assert "kept to retry" in caplog.text
    q.close(timeout=1)


def test_access_denied_is_not_retried_and_is_logged(caplog):
    def respond(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "DeleteMessageBatch")
    stub = StubSqs(respond)
    q = lane(stub)
    q.ack("r")
    with caplog.at_level(logging.WARNING):
        q.close(timeout=5)
    assert len(stub.calls) == 1
    assert "AccessDenied" in caplog.text


# the heartbeat --------------------------------------------------------------------------
def test_nothing_is_extended_while_more_than_half_the_window_is_left():
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    clock.now += 29
    q._tick()
    assert stub.calls == []


def test_a_held_message_is_extended_by_its_queue_timeout_before_it_reappears():
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    for _ in range(6):  # three full windows
        clock.now += 15
        q._tick()
    extended = entries(stub, "ChangeMessageVisibilityBatch")
    assert len(extended) >= 2
    assert all(e["VisibilityTimeout"] == 60 and e["ReceiptHandle"] == "m1" for e in extended)
    assert q._held["m1"].visible_at > clock.now


def test_the_next_pass_is_planned_for_the_first_extension_due():
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    assert q._tick() == pytest.approx(30)


def test_an_acked_message_is_extended_until_its_delete_lands():
    """Issue 13 item 9: the heartbeat does not stop at the ack."""
    down = ClientError({"Error": {"Code": "ServiceUnavailable"},
                        "ResponseMetadata": {"HTTPStatusCode": 503}}, "DeleteMessageBatch")

    def respond(action, _kwargs):
        if action == "DeleteMessageBatch" and clock.now < 1100:
            raise down
        return {}
    clock = Clock()
    stub = StubSqs(respond)
    q = lane(stub, clock=clock, delay=0.0)
    q.hold(["m1"])
    q.ack("m1")
    while clock.now < 1100:
        clock.now += 5
        q._tick()
    assert entries(stub, "ChangeMessageVisibilityBatch")  # extended while undeleted
    for _ in range(10):  # the delete's backoff (jittered, at most 15 s here) runs out
        clock.now += 5
        q._tick()
    assert not q.holds("m1") and q.deleted == 1
    calls = len(stub.calls)
    clock.now += 120
    q._tick()
    assert len(stub.calls) == calls  # deleted: no longer extended


def test_many_messages_are_extended_in_batches_of_ten():
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold([f"m{i}" for i in range(23)])
    clock.now += 31
    q._tick()
    assert sorted(len(kw["Entries"]) for _a, kw in stub.calls) == [3, 10, 10]


def test_the_twelve_hour_cap_is_logged_once_and_ends_the_extensions(caplog):
    """Issue 13 item 13: reaching the cap is said, not silent."""
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock, vt=43_200)
    q.hold(["m1"])
    clock.now += MAX_HOLD_SECONDS
    with caplog.at_level(logging.WARNING):
        q._tick()
        q._tick()
    assert caplog.text.count("12-hour maximum") == 1
    assert stub.calls == []


def test_a_refused_extension_is_logged_once_and_not_tried_again(caplog):
    """Issue 13 item 13: a stale receipt handle warns once, not on every pass."""
    stub, clock = StubSqs(lambda _a, _kw: {"Failed": [
        {"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]}), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            clock.now += 31
            q._tick()
    assert len(stub.calls) == 1
    assert caplog.text.count("ReceiptHandleIsInvalid") == 1


def test_a_failing_kind_of_work_backs_off_without_stopping_the_others():
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch":
            raise EndpointConnectionError(endpoint_url=URL)
        return {}
    stub, clock = StubSqs(respond), Clock()
    q = lane(stub, clock=clock, delay=0.0)
    q.hold(["held"])
    q.ack("acked")
    clock.now += 31
    q._tick()
    assert "ChangeMessageVisibilityBatch" in stub.actions()  # extended despite the deletes


def test_a_stalled_delete_holds_up_neither_the_extensions_nor_the_next_acks():
    """A delete whose answer never comes (until the test lets it) sits on a delete
    thread: the lane still extends its held messages and sends the acks behind it."""
    answer, answered = threading.Event(), threading.Event()

    def respond(action, kwargs):
        if action == "DeleteMessageBatch" and kwargs["Entries"][0]["ReceiptHandle"] == "stuck":
            answer.wait(10)
            answered.set()
        return {}
    stub, clock = StubSqs(respond), Clock()
    q = lane(stub, clock=clock, delay=0.0, inline_deletes=False)
    q.hold(["stuck", "held", "next"])
    q.ack("stuck")
    q._tick()
    q.ack("next")
    clock.now += 31
    q._tick()
    try:
        assert not answered.is_set()  # all of the above while the delete is still stalled
        assert "held" in {e["ReceiptHandle"] for e in entries(stub, "ChangeMessageVisibilityBatch")}
        assert "next" in {e["ReceiptHandle"] for e in entries(stub, "DeleteMessageBatch")}
    finally:
        answer.set()
    assert q._deletes_landed(time.monotonic() + 5)
    assert q.deleted == 2 and not q.holds("stuck")


# releases, dead letters and shutdown ----------------------------------------------------
def test_release_makes_messages_visible_at_once_and_stops_extending_them():
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1", "m2"])
    q.release(["m1", "m2"])
    q._tick()
    (action, kwargs), = stub.calls
    assert action == "ChangeMessageVisibilityBatch"
    assert {e["VisibilityTimeout"] for e in kwargs["Entries"]} == {0}
    assert not q.holds("m1") and not q.holds("m2")


def test_close_sends_the_acks_first_then_releases_everything_still_held():
    ops, shutdown = StubSqs(), StubSqs()
    q = lane(ops, shutdown=shutdown)
    q.hold(["running", "prefetched"])
    q.ack("running")
    q.close(timeout=5)
    assert shutdown.actions() == ["DeleteMessageBatch", "ChangeMessageVisibilityBatch"]
    assert [e["ReceiptHandle"] for e in entries(shutdown, "ChangeMessageVisibilityBatch")] == \
        ["prefetched"]
    assert ops.calls == []


def test_close_gives_up_at_its_deadline_on_a_dead_network(caplog):
    def respond(_action, _kwargs):
        time.sleep(0.3)
        raise EndpointConnectionError(endpoint_url=URL)
    q = lane(StubSqs(), shutdown=StubSqs(respond))
    q.hold(["a", "b"])
    q.ack("a")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        q.close(timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert "not deleted before the shutdown deadline" in caplog.text
    assert "not released before the shutdown deadline" in caplog.text


def test_work_asked_for_after_close_is_done_at_once():
    stub = StubSqs()
    q = lane(stub)
    q.close(timeout=1)
    q.release(["late"])  # a receive that returned after shutdown began
    assert entries(stub, "ChangeMessageVisibilityBatch") == [
        {"Id": "0", "ReceiptHandle": "late", "VisibilityTimeout": 0}]


def received(handle: str = "h1", **system: str) -> dict:
    return {"MessageId": "m-1", "ReceiptHandle": handle, "Body": "not kombu",
            "Attributes": {"ApproximateReceiveCount": "1", **system},
            "MessageAttributes": {"trace": {"DataType": "String", "StringValue": "t-9",
                                            "StringListValues": [], "BinaryListValues": []}}}


def test_a_dead_letter_keeps_its_attributes_gains_a_reason_then_is_deleted():
    stub = StubSqs()
    q = lane(stub)
    q.dead_letter(received(), "rejected without requeue")
    q.close(timeout=5)
    assert stub.actions() == ["SendMessage", "DeleteMessageBatch"]
    sent = stub.calls[0][1]
    assert sent["QueueUrl"] == DLQ and sent["MessageBody"] == "not kombu"
    assert sent["MessageAttributes"] == {
        "trace": {"DataType": "String", "StringValue": "t-9"},
        "kit_reason": {"DataType": "String", "StringValue": "rejected without requeue"},
        "kit_source_queue": {"DataType": "String", "StringValue": "work"}}


def test_a_fifo_dead_letter_keeps_its_group_and_deduplication_id():
    """Issue 13 item 11: not the MessageId as the deduplication id."""
    stub = StubSqs()
    q = QueueLane(queue="orders.fifo", url=URL + ".fifo", visibility_timeout=60,
                  client=lambda _p: stub, dead_letter_url=URL + "-dlq.fifo")
    q.dead_letter(received(MessageGroupId="customer-42", MessageDeduplicationId="task-7"),
                  "undecodable")
    q.close(timeout=5)
    sent = stub.calls[0][1]
    assert (sent["MessageGroupId"], sent["MessageDeduplicationId"]) == ("customer-42", "task-7")


def test_without_a_dlq_a_dead_letter_is_left_for_sqs_and_logged(caplog):
    """Issue 13 item 2: never deleted."""
    stub = StubSqs()
    q = lane(stub, dlq=None)
    q.hold(["h1"])
    with caplog.at_level(logging.ERROR):
        q.dead_letter(received(), "rejected without requeue")
    q.close(timeout=5)
    assert stub.calls == []
    assert "no DLQ: left for SQS to deliver again" in caplog.text


def test_a_dead_letter_move_failing_transiently_is_retried():
    stub, clock = StubSqs(raising(CredentialsError("*", "sts:AssumeRole", "Timeout"), 1)), Clock()
    q = lane(stub, clock=clock)
    q.dead_letter(received(), "undecodable")
    q._tick()
    clock.now += 60
    q._tick()
    assert stub.actions().count("SendMessage") == 2
    q.close(timeout=5)
    assert stub.actions()[-1] == "DeleteMessageBatch"


# parked (a task whose ETA is too far away to hold) -------------------------------------------
def test_a_park_sends_the_message_again_as_received_delayed_then_deletes_it(heard):
    stub = StubSqs()
    q = lane(stub)
    q.park(received(), 300)
    q.close(timeout=5)
    assert stub.actions() == ["SendMessage", "DeleteMessageBatch"]
    assert stub.calls[0][1] == {"QueueUrl": URL, "MessageBody": "not kombu", "DelaySeconds": 300,
                                "MessageAttributes": {"trace": {"DataType": "String",
                                                                "StringValue": "t-9"}}}
    assert entries(stub, "DeleteMessageBatch") == [{"Id": "0", "ReceiptHandle": "h1"}]
    assert heard == []  # not a dead letter


def test_a_parked_message_is_held_until_its_delete_lands():
    """Send first, delete after: between the two, the copy received must not reappear."""
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch" and clock.now < 1100:
            raise EndpointConnectionError(endpoint_url=URL)
        return {}
    clock = Clock()
    stub = StubSqs(respond)
    q = lane(stub, clock=clock, delay=0.0)
    q.park(received(), 900)
    while clock.now < 1100:
        q._tick()
        assert q.holds("h1")
        clock.now += 5
    assert stub.actions().count("SendMessage") == 1
    assert entries(stub, "ChangeMessageVisibilityBatch")  # extended while undeleted
    for _ in range(10):  # the delete's backoff runs out
        clock.now += 5
        q._tick()
    assert not q.holds("h1") and q.deleted == 1


def test_a_park_failing_transiently_is_retried_and_only_then_deleted():
    stub, clock = StubSqs(raising(EndpointConnectionError(endpoint_url=URL), 1)), Clock()
    q = lane(stub, clock=clock, delay=0.0)
    q.park(received(), 60)
    q._tick()
    assert stub.actions() == ["SendMessage"] and q.holds("h1")
    clock.now += 1
    q._tick()
    assert stub.actions() == ["SendMessage", "SendMessage", "DeleteMessageBatch"]


def test_a_refused_park_leaves_the_message_for_sqs_and_says_so(caplog):
    def respond(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "SendMessage")
    stub, clock = StubSqs(respond), Clock()
    q = lane(stub, clock=clock)
    with caplog.at_level(logging.ERROR):
        q.park(received(), 60)
        q._tick()
    assert not q.holds("h1")
    assert stub.actions() == ["SendMessage"]  # never deleted
    assert "could not park message m-1 of queue 'work' (AccessDenied)" in caplog.text


@pytest.fixture
def heard(monkeypatch) -> list:
    """The events the lanes tell, in order."""
    told: list = []
    monkeypatch.setattr(events, "LISTENERS", [told.append])
    return told


def test_landed_extensions_are_told_to_the_listeners(heard):
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1", "m2"])
    clock.now += 31
    q._tick()
    assert heard == [events.Extended("work", 2)]


def test_a_dead_letter_move_is_told_with_its_reason_once_it_landed(heard):
    stub, clock = StubSqs(raising(EndpointConnectionError(endpoint_url=URL), 1)), Clock()
    q = lane(stub, clock=clock)
    q.dead_letter(received(), "rejected without requeue")
    q._tick()  # the send fails: a failure, not a move
    clock.now += 1  # past the move's first backoff (at most 0.2 s)
    q._tick()
    assert heard == [events.WorkFailed("work", "move", "EndpointConnectionError"),
                     events.DeadLettered("work", 1, "rejected without requeue")]
    q.close(timeout=5)


def test_failures_are_told_with_the_kind_of_work_and_the_code(heard):
    """Final answers and retried failures alike, one event per failed call and code (an
    entry SQS asks to retry has no code of its own: "retryable")."""
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch":
            return {"Failed": [{"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"},
                               {"Id": "1", "SenderFault": False, "Code": "InternalError"}]}
        raise ClientError({"Error": {"Code": "RequestThrottled"}}, action)
    stub, clock = StubSqs(respond), Clock()
    q = lane(stub, clock=clock, delay=0.0)
    q.hold(["held"])
    q.release(["given-back"])
    q.ack("stale")
    q.ack("retried")
    clock.now += 31
    q._tick()
    assert heard == [events.WorkFailed("work", "change", "RequestThrottled"),
                     events.WorkFailed("work", "delete", "ReceiptHandleIsInvalid"),
                     events.WorkFailed("work", "delete", "retryable"),
                     events.WorkFailed("work", "extend", "RequestThrottled")]


def test_a_listener_that_raises_does_not_stop_the_lane(monkeypatch, caplog):
    def broken(_event):
        raise RuntimeError("listener bug")
    monkeypatch.setattr(events, "LISTENERS", [broken])
    stub, clock = StubSqs(), Clock()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    q.dead_letter(received("m2"), "undecodable")
    clock.now += 31
    with caplog.at_level(logging.ERROR):
        q._tick()
    assert stub.actions() == ["SendMessage", "ChangeMessageVisibilityBatch"]
    assert "listener failed" in caplog.text
    q.close(timeout=5)  # the moved message is deleted, the held one released
    assert stub.actions()[2:] == ["DeleteMessageBatch", "ChangeMessageVisibilityBatch"]


def test_acks_that_pile_up_go_out_as_several_batches_at_once():
    """One DeleteMessageBatch per round trip would cap a busy queue's deletes at 10 per
    round trip: up to four are on the wire together."""
    on_the_wire, most = [0], [0]
    lock = threading.Lock()

    def respond(_action, _kwargs):
        with lock:
            on_the_wire[0] += 1
            most[0] = max(most[0], on_the_wire[0])
        time.sleep(0.2)
        with lock:
            on_the_wire[0] -= 1
        return {}
    stub = StubSqs(respond)
    q = lane(stub, clock=Clock(), delay=3600.0, inline_deletes=False)
    for i in range(45):
        q.ack(f"r{i}")
    q._tick()  # four full batches at once; the last five wait for their delay
    assert q._deletes_landed(time.monotonic() + 5)
    assert most[0] == 4
    assert sorted(len(kw["Entries"]) for _a, kw in stub.calls) == [10, 10, 10, 10]
    assert q.deleted == 40
    q.close(timeout=5)
    assert q.deleted == 45
