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


class VirtualTime:
    """The lane's clock and its thread's sleep, on a time the test moves: the lane's
    thread sleeps until the time its own plan says, and wakes when ``advance`` passes
    it or when the lane wakes it. Nothing of the lane is stubbed: a wake-up it does not
    ask for, or a pass it plans too late, does not happen here either."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()
        self._sleeping: dict[str, tuple[threading.Event, float]] = {}  # thread name ->

    def __call__(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        name = threading.current_thread().name
        with self._lock:
            self._sleeping[name] = (event, self.now + timeout)
        try:
            while not event.wait(0.001):  # the scheduler's own poll: no test waits on it
                if self.now >= self._sleeping[name][1]:
                    return False
            return True
        finally:
            with self._lock:
                del self._sleeping[name]

    def settle(self, q: QueueLane, timeout: float = 10.0) -> None:
        """Wait until the lane's thread (if it ever started) sleeps, with no wake-up
        pending and its planned pass still ahead."""
        deadline = time.monotonic() + timeout
        while not self._asleep(q):
            assert time.monotonic() < deadline, "the lane to settle"
            time.sleep(0.001)

    def _asleep(self, q: QueueLane) -> bool:
        if not any(t.name == q._name and t.is_alive() for t in threading.enumerate()):
            return True
        with self._lock:
            sleeping = self._sleeping.get(q._name)
        return sleeping is not None and not sleeping[0].is_set() and self.now < sleeping[1]

    def advance(self, q: QueueLane, seconds: float) -> None:
        """Let ``seconds`` pass, and the lane do what falls due meanwhile."""
        self.settle(q)
        self.now += seconds
        self.settle(q)


class Inline(Executor):
    """Runs each delete batch at once, on the lane's thread: its passes stay in step
    with the test's time."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


MADE: list[QueueLane] = []


@pytest.fixture(autouse=True)
def _closed_lanes():
    """Every lane a test makes is closed after it: no thread outlives its test."""
    yield
    while MADE:
        MADE.pop().close(timeout=1)


def lane(stub: StubSqs, *, clock: VirtualTime | None = None, delay: float = 3600.0,
         vt: int = 60, dlq: str | None = DLQ, shutdown: StubSqs | None = None,
         inline_deletes: bool | None = None, on_room=None) -> QueueLane:
    """A lane on ``stub``; with ``clock``, on the test's time (and, unless told
    otherwise, deleting on its own thread)."""
    clients = {"ops": stub, "shutdown": shutdown or stub}
    inline = clock is not None if inline_deletes is None else inline_deletes
    timing = {} if clock is None else {"clock": clock, "wait": clock.wait}
    made = QueueLane(queue="work", url=URL, visibility_timeout=vt,
                     client=lambda profile: clients[profile], dead_letter_url=dlq,
                     flush_delay=delay, delete_executor=Inline() if inline else None,
                     on_room=on_room, **timing)
    MADE.append(made)
    return made


def eventually(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return value


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
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock, delay=60.0)
    for i in range(13):
        q.ack(f"r{i}")  # the tenth wakes the lane, long before the delay
    clock.settle(q)
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10]
    clock.advance(q, 59)
    assert [len(kw["Entries"]) for _a, kw in stub.calls] == [10]
    clock.advance(q, 1)  # the remainder's delay
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
    stub, clock = StubSqs(raising(error, 2)), VirtualTime()
    q = lane(stub, clock=clock, delay=0.0)
    with caplog.at_level(logging.WARNING):
        q.ack("r")
        for _ in range(2):
            clock.advance(q, 60)
    assert len(stub.calls) == 3
    assert q.deleted == 1
    assert "kept to retry" in caplog.text


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
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    clock.advance(q, 29)
    assert stub.calls == []


def test_a_held_message_is_extended_by_its_queue_timeout_before_it_reappears():
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    for _ in range(6):  # three full windows
        clock.advance(q, 15)
    extended = entries(stub, "ChangeMessageVisibilityBatch")
    assert len(extended) >= 2
    assert all(e["VisibilityTimeout"] == 60 and e["ReceiptHandle"] == "m1" for e in extended)
    assert q._held["m1"].visible_at > clock.now


def test_the_next_pass_is_planned_for_the_first_extension_due():
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    clock.advance(q, 29.9)
    assert stub.calls == []
    clock.advance(q, 0.1)
    assert [e["ReceiptHandle"] for e in entries(stub, "ChangeMessageVisibilityBatch")] == ["m1"]


def test_a_new_hold_is_extended_on_time_beside_a_message_no_longer_extended():
    """Issue 18 item 3: a held message SQS refused to extend (or at the 12-hour cap) no
    longer counts for the lane's next pass; a message held after it must still wake the
    lane for its own first extension, not wait out the idle hour."""
    stub, clock = StubSqs(lambda _a, kw: {"Failed": [
        {"Id": e["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}
        for e in kw["Entries"] if e["ReceiptHandle"] == "stale"]}), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["stale"])
    clock.advance(q, 31)  # refused: no longer extended, still held
    q.hold(["new"])
    clock.advance(q, 31)
    assert "new" in {e["ReceiptHandle"] for e in entries(stub, "ChangeMessageVisibilityBatch")}


def test_a_hold_due_before_the_planned_pass_wakes_the_lane():
    """Issue 18 item 3: a lane planning its next pass for a message due later is woken
    for one held meanwhile with a shorter way to go (here: the other is an acked
    message waiting for a long flush delay)."""
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock, vt=600, delay=500.0)
    q.hold(["later"])  # extension due in 300 s
    clock.advance(q, 250)
    q.visibility_timeout = 60  # a queue's lanes share one plan: one with a shorter window
    q.hold(["sooner"])  # due in 30 s, before the pass planned at +300
    clock.advance(q, 31)
    assert [e["ReceiptHandle"] for e in entries(stub, "ChangeMessageVisibilityBatch")] == \
        ["sooner"]


def test_an_acked_message_is_extended_until_its_delete_lands():
    """Issue 13 item 9: the heartbeat does not stop at the ack."""
    down = ClientError({"Error": {"Code": "ServiceUnavailable"},
                        "ResponseMetadata": {"HTTPStatusCode": 503}}, "DeleteMessageBatch")

    def respond(action, _kwargs):
        if action == "DeleteMessageBatch" and clock.now < 1100:
            raise down
        return {}
    clock = VirtualTime()
    stub = StubSqs(respond)
    q = lane(stub, clock=clock, delay=0.0)
    q.hold(["m1"])
    q.ack("m1")
    while clock.now < 1100:
        clock.advance(q, 5)
    assert entries(stub, "ChangeMessageVisibilityBatch")  # extended while undeleted
    for _ in range(10):  # the delete's backoff (jittered, at most 15 s here) runs out
        clock.advance(q, 5)
    assert not q.holds("m1") and q.deleted == 1
    calls = len(stub.calls)
    clock.advance(q, 120)
    assert len(stub.calls) == calls  # deleted: no longer extended


def test_many_messages_are_extended_in_batches_of_ten():
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold([f"m{i}" for i in range(23)])
    clock.advance(q, 31)
    assert sorted(len(kw["Entries"]) for _a, kw in stub.calls) == [3, 10, 10]


def test_the_twelve_hour_cap_is_logged_once_and_ends_the_extensions(caplog):
    """Issue 13 item 13: reaching the cap is said, not silent."""
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock, vt=43_200)
    with caplog.at_level(logging.WARNING):
        q.hold(["m1"])
        clock.advance(q, MAX_HOLD_SECONDS)
        clock.advance(q, 60)
    assert caplog.text.count("12-hour maximum") == 1
    assert stub.calls == []


def test_a_refused_extension_is_logged_once_and_not_tried_again(caplog):
    """Issue 13 item 13: a stale receipt handle warns once, not on every pass."""
    stub, clock = StubSqs(lambda _a, _kw: {"Failed": [
        {"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]}), VirtualTime()
    q = lane(stub, clock=clock)
    with caplog.at_level(logging.WARNING):
        q.hold(["m1"])
        for _ in range(4):
            clock.advance(q, 31)
    assert len(stub.calls) == 1
    assert caplog.text.count("ReceiptHandleIsInvalid") == 1


def test_a_failing_kind_of_work_backs_off_without_stopping_the_others():
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch":
            raise EndpointConnectionError(endpoint_url=URL)
        return {}
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=0.0)
    q.hold(["held"])
    q.ack("acked")
    clock.advance(q, 31)
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
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=0.0, inline_deletes=False)
    q.hold(["stuck", "held", "next"])
    q.ack("stuck")
    eventually(lambda: entries(stub, "DeleteMessageBatch"), "the stalled delete")
    q.ack("next")
    clock.advance(q, 31)
    try:
        eventually(lambda: "next" in {e["ReceiptHandle"]
                                      for e in entries(stub, "DeleteMessageBatch")}, "next")
        assert not answered.is_set()  # all of the above while the delete is still stalled
        assert "held" in {e["ReceiptHandle"] for e in entries(stub, "ChangeMessageVisibilityBatch")}
    finally:
        answer.set()
    assert q._deletes_landed(time.monotonic() + 5)
    assert q.deleted == 2 and not q.holds("stuck")


# releases, dead letters and shutdown ----------------------------------------------------
def test_release_makes_messages_visible_at_once_and_stops_extending_them():
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1", "m2"])
    q.release(["m1", "m2"])
    clock.advance(q, 120)
    (action, kwargs), = stub.calls
    assert action == "ChangeMessageVisibilityBatch"
    assert {e["VisibilityTimeout"] for e in kwargs["Entries"]} == {0}
    assert not q.holds("m1") and not q.holds("m2")


def test_a_requeue_returns_once_its_release_is_sent():
    """Issue 18 item 9: when requeue() returns the message is visible again, as with
    stock kombu, not some time later when the lane gets to it."""
    stub = StubSqs()
    q = lane(stub)
    q.hold(["m1"])
    q.release(["m1"], wait=5)
    assert entries(stub, "ChangeMessageVisibilityBatch") == [
        {"Id": "0", "ReceiptHandle": "m1", "VisibilityTimeout": 0}]


def test_a_requeue_is_sent_after_an_extension_of_it_already_on_the_wire():
    """Issue 18 item 9: waiting for the release keeps it behind the extension, or the
    extension's answer would undo it."""
    on_wire, answer = threading.Event(), threading.Event()
    order: list[str] = []

    def respond(_action, kwargs):
        (entry,) = kwargs["Entries"]
        if entry["VisibilityTimeout"]:
            on_wire.set()
            answer.wait(10)
            order.append("extended")
        else:
            order.append("released")
        return {}
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    clock.settle(q)
    clock.now += 31  # the lane's thread wakes and extends: its answer is held back
    assert on_wire.wait(10)
    requeued = threading.Thread(target=q.release, args=(["m1"],), kwargs={"wait": 10})
    requeued.start()
    answer.set()
    requeued.join(10)
    assert order == ["extended", "released"]


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


def test_close_sends_the_acks_before_the_moves_then_each_move_s_delete():
    """Issue 18 item 2: a backlog of parks at shutdown must not keep finished tasks'
    acks from going out (they would run again)."""
    ops, shutdown = StubSqs(), StubSqs()
    q = lane(ops, shutdown=shutdown)
    q.begin_close()  # as the channel does first: what follows waits for close()
    for i in range(25):
        q.park(received(f"p{i}"), 600)
    q.ack("done")
    q.close(timeout=5)
    assert shutdown.actions() == ["DeleteMessageBatch"] + \
        ["SendMessageBatch", "DeleteMessageBatch"] * 3
    assert shutdown.calls[0][1]["Entries"] == [{"Id": "0", "ReceiptHandle": "done"}]
    assert [len(kw["Entries"]) for _a, kw in shutdown.calls[1:]] == [10, 10, 10, 10, 5, 5]


def test_close_checks_its_deadline_before_each_call(caplog):
    """Issue 18 item 2: a slow network bounds the shutdown, not the number of moves."""
    def respond(_action, _kwargs):
        time.sleep(0.2)  # a slow answer (the network's delay, not the test's sync)
        return {}
    shutdown = StubSqs(respond)
    q = lane(StubSqs(), shutdown=shutdown)
    q.begin_close()
    for i in range(200):
        q.park(received(f"p{i}"), 600)
    q.ack("done")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        q.close(timeout=1.0)
    assert time.monotonic() - started < 1.0 + 0.5  # at most one call past the deadline
    assert shutdown.actions()[0] == "DeleteMessageBatch"
    assert "moved (dead-lettered or parked) message(s) not deleted" in caplog.text


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


def test_close_waits_for_the_pass_on_the_wire_and_stops_the_lane_s_thread():
    """Issue 18 item 4: the final drain does not run beside a pass (its release could be
    undone by an extension still on the wire), and nothing runs after close returns."""
    on_wire, released = threading.Event(), threading.Event()
    overlapped: list[bool] = []

    def extend(_action, _kwargs):
        on_wire.set()
        # An answer slower than close's old 2 s wait for the pass; a release sent
        # meanwhile (the bug) ends it early.
        overlapped.append(released.wait(3))
        return {}
    ops, clock = StubSqs(extend), VirtualTime()
    shutdown = StubSqs(lambda _a, _kw: released.set() or {})
    q = lane(ops, clock=clock, shutdown=shutdown)
    q.hold(["m1"])
    clock.settle(q)
    clock.now += 31
    assert on_wire.wait(10)
    q.close(timeout=10)
    assert overlapped == [False]
    assert shutdown.actions() == ["ChangeMessageVisibilityBatch"]
    assert not q._ticker._thread.is_alive()  # its own thread: other tests' lanes share its name


def test_work_asked_for_after_close_is_done_at_once():
    stub = StubSqs()
    q = lane(stub)
    q.close(timeout=1)
    q.release(["late"])  # a receive that returned after shutdown began
    assert entries(stub, "ChangeMessageVisibilityBatch") == [
        {"Id": "0", "ReceiptHandle": "late", "VisibilityTimeout": 0}]


def received(handle: str = "h1", *, attributes: dict | None = None, **system: str) -> dict:
    return {"MessageId": "m-1", "ReceiptHandle": handle, "Body": "not kombu",
            "Attributes": {"ApproximateReceiveCount": "1", **system},
            "MessageAttributes": attributes or {
                "trace": {"DataType": "String", "StringValue": "t-9",
                          "StringListValues": [], "BinaryListValues": []}}}


def test_a_dead_letter_keeps_its_attributes_gains_a_reason_then_is_deleted():
    stub = StubSqs()
    q = lane(stub)
    q.dead_letter(received(), "rejected without requeue")
    q.close(timeout=5)
    assert stub.actions() == ["SendMessageBatch", "DeleteMessageBatch"]
    assert stub.calls[0][1]["QueueUrl"] == DLQ
    (sent,) = entries(stub, "SendMessageBatch")
    assert sent["MessageBody"] == "not kombu"
    assert sent["MessageAttributes"] == {
        "trace": {"DataType": "String", "StringValue": "t-9"},
        "kit_reason": {"DataType": "String", "StringValue": "rejected without requeue"},
        "kit_source_queue": {"DataType": "String", "StringValue": "work"}}


def dead_letter_copy_attributes(attributes: dict, caplog) -> dict:
    """The attributes of the DLQ copy of a message received with ``attributes`` (the
    lane's warnings captured)."""
    stub = StubSqs()
    q = lane(stub)
    with caplog.at_level(logging.WARNING):
        q.dead_letter(received(attributes=attributes), "undecodable")
        q.close(timeout=5)
    (sent,) = entries(stub, "SendMessageBatch")
    return sent["MessageAttributes"]


def test_a_sender_s_kit_attributes_never_reach_the_dlq_copy(caplog):
    """Issue 19 item 2: ``kit_reason`` and ``kit_source_queue`` are the kit's word (the
    operator's redrive reads them); a sender's are dropped, and said so."""
    forged = {"kit_source_queue": {"DataType": "String", "StringValue": "payments"},
              "KIT_reason": {"DataType": "String", "StringValue": "fine"},
              "kit_other": {"DataType": "String", "StringValue": "x"},
              "trace": {"DataType": "String", "StringValue": "t-9"}}
    assert dead_letter_copy_attributes(forged, caplog) == {
        "trace": {"DataType": "String", "StringValue": "t-9"},
        "kit_reason": {"DataType": "String", "StringValue": "undecodable"},
        "kit_source_queue": {"DataType": "String", "StringValue": "work"}}
    assert "without its attribute(s) KIT_reason, kit_other, kit_source_queue" in caplog.text


def test_with_ten_attributes_the_kit_s_own_win_and_the_dropped_are_logged(caplog):
    """Issue 19 item 2: SQS takes 10 attributes; the kit's were dropped when the
    message carried 10 of its own."""
    own = {f"a{i}": {"DataType": "String", "StringValue": str(i)} for i in range(10)}
    attributes = dead_letter_copy_attributes(own, caplog)
    assert len(attributes) == 10
    assert attributes["kit_reason"]["StringValue"] == "undecodable"
    assert attributes["kit_source_queue"]["StringValue"] == "work"
    assert "without its attribute(s) a8, a9" in caplog.text


def test_a_fifo_dead_letter_keeps_its_group_and_deduplication_id():
    """Issue 13 item 11: not the MessageId as the deduplication id."""
    stub = StubSqs()
    q = QueueLane(queue="orders.fifo", url=URL + ".fifo", visibility_timeout=60,
                  client=lambda _p: stub, dead_letter_url=URL + "-dlq.fifo")
    q.dead_letter(received(MessageGroupId="customer-42", MessageDeduplicationId="task-7"),
                  "undecodable")
    q.close(timeout=5)
    (sent,) = entries(stub, "SendMessageBatch")
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
    stub = StubSqs(raising(CredentialsError("*", "sts:AssumeRole", "Timeout"), 1))
    clock = VirtualTime()
    q = lane(stub, clock=clock)
    q.dead_letter(received(), "undecodable")
    clock.advance(q, 60)
    assert stub.actions().count("SendMessageBatch") == 2
    q.close(timeout=5)
    assert stub.actions()[-1] == "DeleteMessageBatch"


# parked (a task whose ETA is too far away to hold) -------------------------------------------
def test_a_park_sends_the_message_again_as_received_delayed_then_deletes_it(heard):
    stub = StubSqs()
    q = lane(stub)
    q.park(received(), 300)
    q.close(timeout=5)
    assert stub.actions() == ["SendMessageBatch", "DeleteMessageBatch"]
    assert stub.calls[0][1] == {"QueueUrl": URL, "Entries": [{
        "Id": "0", "MessageBody": "not kombu", "DelaySeconds": 300,
        "MessageAttributes": {"trace": {"DataType": "String", "StringValue": "t-9"}}}]}
    assert entries(stub, "DeleteMessageBatch") == [{"Id": "0", "ReceiptHandle": "h1"}]
    assert heard == []  # not a dead letter


def test_moves_go_out_ten_to_a_batch_within_sqs_payload_cap():
    """Issue 18 item 1: SendMessageBatch, not a SendMessage each; a batch of big
    messages stops short of SQS's cap on a batch's payload."""
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    for i in range(25):
        q.park(received(f"small{i}"), 60)
    big = {**received("big0"), "Body": "x" * 400_000}
    for i in range(3):
        q.dead_letter({**big, "ReceiptHandle": f"big{i}"}, "undecodable")
    clock.settle(q)
    sizes = [(kw["QueueUrl"], len(kw["Entries"])) for a, kw in stub.calls
             if a == "SendMessageBatch"]
    assert sorted(sizes) == sorted([(URL, 10), (URL, 10), (URL, 5), (DLQ, 2), (DLQ, 1)])
    assert "SendMessage" not in stub.actions()


def test_a_backlog_of_moves_holds_up_neither_the_extensions_nor_the_acks():
    """Issue 18 item 1: every request takes time; thousands of parks must not starve
    the heartbeat of a running task (it would reappear and run twice) nor its ack. The
    parks arrive as the transport's receive window lets them: as room is made."""
    calls: list[tuple[float, str, list[str]]] = []
    parked = [0]

    def respond(action, kwargs):
        clock.now += 0.2  # each request's round trip, on the lane's time
        calls.append((clock.now, action, [e.get("ReceiptHandle") for e in kwargs["Entries"]]))
        return {}

    def receive_more():
        while q.moves_pending < 40 and parked[0] < 3000:
            q.park(received(f"p{parked[0]}"), 900)
            parked[0] += 1
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=0.1, on_room=receive_more)
    q.hold(["running", "finishing"])
    clock.settle(q)
    receive_more()
    acked_at = clock.now
    q.ack("finishing")
    clock.settle(q, timeout=60)
    assert parked[0] == 3000 and q.moves_pending == 0
    assert sum(len(h) for _at, a, h in calls if a == "SendMessageBatch") == 3000
    extended = [1000.0] + [at for at, action, handles in calls
                           if action == "ChangeMessageVisibilityBatch" and "running" in handles]
    # each extension within a few requests of its due time, half a window ahead
    assert len(extended) > 3 and all(b - a < 30 + 5 for a, b in zip(extended, extended[1:]))
    deleted = next(at for at, action, handles in calls
                   if action == "DeleteMessageBatch" and "finishing" in handles)
    last_move = max(at for at, action, _h in calls if action == "SendMessageBatch")
    assert deleted < acked_at + 5 < last_move


def test_a_message_is_moved_once_however_often_it_is_asked():
    """Issue 18 item 1: one receive, one copy parked."""
    stub = StubSqs()
    q = lane(stub)
    q.park(received(), 300)
    q.park(received(), 300)
    q.close(timeout=5)
    assert len(entries(stub, "SendMessageBatch")) == 1


def test_a_retried_batch_sends_again_only_what_sqs_did_not_take():
    """Issue 18 item 10: entries SQS reported sent are not sent twice."""
    answers = iter([{"Successful": [{"Id": "0"}, {"Id": "2"}],
                     "Failed": [{"Id": "1", "SenderFault": False, "Code": "InternalError"}]}])
    stub, clock = StubSqs(lambda a, _kw: next(answers, {}) if a == "SendMessageBatch"
                          else {}), VirtualTime()
    q = lane(stub, clock=clock, delay=0.0)
    for i in range(3):
        q.park(received(f"p{i}"), 60)
    clock.advance(q, 5)
    sent = [[e["Id"] for e in kw["Entries"]] for a, kw in stub.calls if a == "SendMessageBatch"]
    assert sent == [["0", "1", "2"], ["0"]]  # the retry holds p1 alone
    assert sorted(e["ReceiptHandle"] for e in entries(stub, "DeleteMessageBatch")) == \
        ["p0", "p1", "p2"]


def test_moves_pending_count_until_each_copy_is_deleted_then_make_room():
    """Issue 18 item 1: what is being parked takes room in what the queue may receive,
    until the copy received is deleted; the lane says when room is made."""
    rooms: list[int] = []
    on_wire, go = threading.Event(), threading.Event()

    def respond(action, _kwargs):
        if action == "ChangeMessageVisibilityBatch":  # a pass busy while the parks come
            on_wire.set()
            go.wait(10)
        return {}
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=30.0, on_room=lambda: rooms.append(q.moves_pending))
    q.hold(["m0"])
    clock.settle(q)
    clock.now += 31
    assert on_wire.wait(10)
    for i in range(12):
        q.park(received(f"p{i}"), 60)
    assert q.moves_pending == 12
    go.set()
    clock.settle(q)
    assert stub.actions() == ["ChangeMessageVisibilityBatch", "SendMessageBatch",
                              "DeleteMessageBatch", "SendMessageBatch"]
    assert q.moves_pending == 2 and rooms == [2]  # the first ten's copies are deleted
    clock.advance(q, 30)  # the other two's delete waited for the flush delay
    assert q.moves_pending == 0 and rooms == [2, 0]


def test_a_parked_message_is_held_until_its_delete_lands():
    """Send first, delete after: between the two, the copy received must not reappear."""
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch" and clock.now < 1100:
            raise EndpointConnectionError(endpoint_url=URL)
        return {}
    clock = VirtualTime()
    stub = StubSqs(respond)
    q = lane(stub, clock=clock, delay=0.0)
    q.park(received(), 900)
    clock.settle(q)
    while clock.now < 1100:
        assert q.holds("h1")
        clock.advance(q, 5)
    assert stub.actions().count("SendMessageBatch") == 1
    assert entries(stub, "ChangeMessageVisibilityBatch")  # extended while undeleted
    for _ in range(10):  # the delete's backoff runs out
        clock.advance(q, 5)
    assert not q.holds("h1") and q.deleted == 1


def test_a_park_failing_transiently_is_retried_and_only_then_deleted():
    stub = StubSqs(raising(EndpointConnectionError(endpoint_url=URL), 1))
    clock = VirtualTime()
    q = lane(stub, clock=clock, delay=0.0)
    q.park(received(), 60)
    clock.settle(q)
    assert stub.actions() == ["SendMessageBatch"] and q.holds("h1")
    clock.advance(q, 1)
    assert stub.actions() == ["SendMessageBatch", "SendMessageBatch", "DeleteMessageBatch"]


def test_a_refused_park_leaves_the_message_for_sqs_and_says_so(caplog):
    def respond(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "SendMessageBatch")
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock)
    with caplog.at_level(logging.ERROR):
        q.park(received(), 60)
        clock.settle(q)
    assert not q.holds("h1") and q.moves_pending == 0
    assert stub.actions() == ["SendMessageBatch"]  # never deleted
    assert "could not park message m-1 of queue 'work' (AccessDenied)" in caplog.text


@pytest.fixture
def heard(monkeypatch) -> list:
    """The events the lanes tell, in order."""
    told: list = []
    monkeypatch.setattr(events, "LISTENERS", [told.append])
    return told


def test_landed_extensions_are_told_to_the_listeners(heard):
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1", "m2"])
    clock.advance(q, 31)
    assert heard == [events.Extended("work", 2)]


def test_a_dead_letter_move_is_told_with_its_reason_once_it_landed(heard):
    stub = StubSqs(raising(EndpointConnectionError(endpoint_url=URL), 1))
    clock = VirtualTime()
    q = lane(stub, clock=clock)
    q.dead_letter(received(), "rejected without requeue")
    clock.settle(q)  # the send fails: a failure, not a move
    clock.advance(q, 1)  # past the move's first backoff (at most 0.2 s)
    assert heard == [events.WorkFailed("work", "move", "EndpointConnectionError"),
                     events.DeadLettered("work", 1, "rejected without requeue")]


def test_failures_are_told_with_the_kind_of_work_and_the_code(heard):
    """Final answers and retried failures alike, one event per failed call and code (an
    entry SQS asks to retry has no code of its own: "retryable")."""
    def respond(action, _kwargs):
        if action == "DeleteMessageBatch":
            return {"Failed": [{"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"},
                               {"Id": "1", "SenderFault": False, "Code": "InternalError"}]}
        raise ClientError({"Error": {"Code": "RequestThrottled"}}, action)
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=1.0)
    q.hold(["held"])
    q.release(["given-back"])
    clock.settle(q)
    q.ack("stale")
    q.ack("retried")
    clock.advance(q, 31)
    assert heard == [events.WorkFailed("work", "change", "RequestThrottled"),
                     events.WorkFailed("work", "extend", "RequestThrottled"),
                     events.WorkFailed("work", "change", "RequestThrottled"),
                     events.WorkFailed("work", "delete", "ReceiptHandleIsInvalid"),
                     events.WorkFailed("work", "delete", "retryable")]


def test_a_listener_that_raises_does_not_stop_the_lane(monkeypatch, caplog):
    def broken(_event):
        raise RuntimeError("listener bug")
    monkeypatch.setattr(events, "LISTENERS", [broken])
    stub, clock = StubSqs(), VirtualTime()
    q = lane(stub, clock=clock)
    q.hold(["m1"])
    with caplog.at_level(logging.ERROR):
        q.dead_letter(received("m2"), "undecodable")
        clock.advance(q, 31)
    assert stub.actions() == ["SendMessageBatch", "ChangeMessageVisibilityBatch"]
    assert "listener failed" in caplog.text
    q.close(timeout=5)  # the moved message is deleted, the held one released
    assert stub.actions()[2:] == ["DeleteMessageBatch", "ChangeMessageVisibilityBatch"]


def test_acks_that_pile_up_go_out_as_several_batches_at_once():
    """One DeleteMessageBatch per round trip would cap a busy queue's deletes at 10 per
    round trip: up to four are on the wire together. Each answer waits until the test
    has seen four on the wire at once (or its deadline)."""
    wire = threading.Condition()
    on_the_wire, most, answer = [0], [0], threading.Event()

    def respond(_action, _kwargs):
        with wire:
            on_the_wire[0] += 1
            most[0] = max(most[0], on_the_wire[0])
            wire.notify_all()
        answer.wait(10)
        with wire:
            on_the_wire[0] -= 1
        return {}
    stub, clock = StubSqs(respond), VirtualTime()
    q = lane(stub, clock=clock, delay=3600.0, inline_deletes=False)
    for i in range(45):
        q.ack(f"r{i}")  # four full batches at once; the last five wait for their delay
    with wire:
        assert wire.wait_for(lambda: on_the_wire[0] == 4, timeout=10)
    answer.set()
    assert q._deletes_landed(time.monotonic() + 5)
    clock.settle(q)
    assert most[0] == 4
    assert sorted(len(kw["Entries"]) for _a, kw in stub.calls) == [10, 10, 10, 10]
    assert q.deleted == 40
    q.close(timeout=5)
    assert q.deleted == 45
