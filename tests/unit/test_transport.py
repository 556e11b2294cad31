"""The bundled transport's receive scheduling (``runtime.receive_window`` wired to
the channel's QoS): a queue receives again only when a batch's worth of prefetch
slots is free; until then it is parked (no receive, no busy loop), and acks,
rejects and a wider window resume it, or, once a slot is free, the batch wait."""

from __future__ import annotations

import json
import select
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from kombu import Connection
from kombu.transport.SQS.exceptions import UndefinedQueueException

from runtime import events
from runtime.errors import (ConfigError, EtaTooFar, MessageTooLarge, PublishError,
                           QueueNotFound)
from runtime.transport import Transport
from tests.unit.stub_sqs import LongPolls, StubSqs

QUEUE = "work"


class Timer:
    def __init__(self, delay: float, callback: Any, *args: Any) -> None:
        self.delay, self.callback, self.args, self.cancelled = delay, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class RecordingHub:
    """Records what is scheduled; ``run()`` is one pass of the event loop and
    ``fire_timers()`` lets time pass."""

    def __init__(self) -> None:
        self.soon: list[tuple[Any, tuple[Any, ...]]] = []
        self.readers: dict[int, Any] = {}
        self.timers: list[Timer] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append((callback, args))

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        self.timers.append(Timer(delay, callback, *args))
        return self.timers[-1]

    def pending_timers(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def fire_timers(self) -> None:
        timers, self.timers = self.pending_timers(), []
        for timer in timers:
            timer.callback(*timer.args)

    def add_reader(self, fd: int, callback: Any) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def run(self) -> None:
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)
        for on_readable in list(self.readers.values()):
            on_readable()


@pytest.fixture
def channel(monkeypatch):
    """A channel on a recording hub whose receives take the transport's own path (the
    receiver's threads, then ``_on_received`` on the hub) to SQS, a stand-in at the AWS
    boundary whose long polls wait until the test answers them
    (``channel.long_polls.answer``); ``channel.receives`` lists what each receive
    started asked for (watched on the way, not replaced)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    connection = Connection(transport=Transport, transport_options={
        "region": "us-east-1",
        "predefined_queues": {QUEUE: {"url": f"https://sqs.example/123/{QUEUE}"}}})
    ch = connection.channel()
    ch.hub = RecordingHub()
    ch.long_polls = LongPolls()
    monkeypatch.setattr(ch._credentials, "client", lambda *_a, **_k: ch.long_polls)
    ch.receives = []
    get_async = ch._get_async

    def receive(queue: str, count: int = 1, callback: Any = None) -> Any:
        ch.receives.append(count)
        return get_async(queue, count, callback)
    monkeypatch.setattr(ch, "_get_async", receive)
    ch._active_queues.append(QUEUE)
    yield ch
    for tag in list(ch.qos._delivered):  # nothing to give back to SQS at exit
        ch.qos.ack(tag)
    ch.receiver.close()
    ch.long_polls.close()


def run_hub_until(ch, done, what: str, timeout: float = 10) -> None:
    """Run the hub (receive results arrive from the receiver's threads) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        ch.hub.run()
        time.sleep(0.005)


def consume(ch, on_message=lambda _message: None) -> None:
    """A consumer on the queue, as Celery starts one: its first receive is scheduled."""
    ch.basic_consume(QUEUE, False, on_message, "consumer")
    run_hub_until(ch, lambda: ch.receives, "the first receive")


def full_batch(tag: str) -> list[dict[str, Any]]:
    return [task_message(f"{tag}-{i}", None) for i in range(10)]


class Delivered:
    delivery_info: dict[str, Any] = {"routing_key": QUEUE}


def hold(ch, count: int, prefetch: int) -> list[str]:
    ch.basic_qos(prefetch_count=prefetch)
    tags = [f"tag-{i}" for i in range(count)]
    for tag in tags:
        ch.qos.append(Delivered(), tag)
    return tags


def test_a_window_without_room_for_a_batch_parks_the_queue_instead_of_spinning(channel):
    hold(channel, 11, prefetch=20)  # 9 free: stock would receive 9, or reschedule at once
    channel._schedule_queue(QUEUE)
    channel.hub.run()
    assert channel.receives == []
    assert channel.hub.soon == []


def test_acks_resume_a_parked_queue_once_a_full_batch_fits(channel):
    tags = hold(channel, 12, prefetch=20)
    channel._schedule_queue(QUEUE)
    channel.qos.ack(tags[0])  # 9 free
    channel.hub.run()
    assert channel.receives == []
    channel.qos.reject(tags[1])  # 10 free
    channel.hub.run()
    assert channel.receives == [10]
    assert channel.hub.pending_timers() == []  # the batch wait is over with the batch


def test_a_parked_queue_with_a_free_slot_waits_at_most_the_batch_wait(channel):
    tags = hold(channel, 8, prefetch=8)  # batch of 4: half the window
    channel._schedule_queue(QUEUE)
    assert channel.hub.pending_timers() == []  # no slot free: nothing to wait for
    channel.qos.ack(tags[0])
    channel.hub.run()
    assert channel.receives == []
    assert [t.delay for t in channel.hub.pending_timers()] == [0.1]
    channel.hub.fire_timers()
    assert channel.receives == [1]  # the pool is not left idle for the other three


def test_a_small_window_receives_when_half_of_it_is_free(channel):
    hold(channel, 1, prefetch=2)
    channel._schedule_queue(QUEUE)
    assert channel.receives == [1]


def test_a_wider_window_resumes_a_parked_queue(channel):
    hold(channel, 20, prefetch=20)
    channel._schedule_queue(QUEUE)
    channel.basic_qos(prefetch_count=30)  # as Celery does for ETA tasks
    channel.hub.run()
    assert channel.receives == [10]


def test_without_a_prefetch_limit_every_receive_asks_for_ten(channel):
    channel._schedule_queue(QUEUE)
    assert channel.receives == [10]


def test_an_ack_from_a_pool_thread_wakes_the_hub(channel):
    tags = hold(channel, 11, prefetch=20)
    channel._schedule_queue(QUEUE)
    acking = threading.Thread(target=channel.qos.ack, args=(tags[0],))  # as the threads pool
    acking.start()
    acking.join()
    read_fd = next(iter(channel.hub.readers))
    assert select.select([read_fd], [], [], 1.0)[0] == [read_fd]  # epoll would wake
    channel.hub.run()
    assert channel.receives == [10]


def test_a_busy_queue_keeps_several_full_receives_in_flight_within_the_window(channel):
    channel.basic_qos(prefetch_count=30)
    consume(channel)
    assert channel.receives == [10]  # not known to be busy yet: one receive
    channel.long_polls.answer(full_batch("got"))  # it comes back full, and is delivered
    run_hub_until(channel, lambda: len(channel.receives) == 3, "the busy queue's receives")
    assert channel.qos.unacked() == 10
    channel.hub.run()
    assert channel.receives == [10, 10, 10]  # 10 delivered + 20 asked for = the window


def test_an_idle_queue_keeps_one_receive_in_flight(channel):
    channel.basic_qos(prefetch_count=40)
    consume(channel)
    channel.long_polls.answer([])  # an empty long poll
    run_hub_until(channel, lambda: len(channel.receives) == 2, "the next long poll")
    channel.hub.run()
    assert channel.receives == [10, 10]  # one at a time, however wide the window


def test_receives_in_flight_count_against_the_window(channel):
    channel.basic_qos(prefetch_count=20)
    consume(channel, on_message=lambda message: message.ack())  # a pool that keeps up
    channel.long_polls.answer(full_batch("got"))  # busy, and all of it acked at once
    run_hub_until(channel, lambda: len(channel.receives) == 3, "the busy queue's receives")
    assert channel.qos.unacked() == 0
    channel._schedule_queue(QUEUE)  # nothing came back yet: no room for a third
    channel.hub.run()
    assert channel.receives == [10, 10, 10]  # the first, then two in flight = the window


def test_acks_start_another_receive_for_a_busy_queue_without_waiting_for_one_to_return(
        channel):
    delivered: list[Any] = []
    channel.basic_qos(prefetch_count=20)
    consume(channel, on_message=delivered.append)
    channel.long_polls.answer(full_batch("got"))  # busy: 10 delivered, held by the pool
    run_hub_until(channel, lambda: len(channel.receives) == 2, "the busy queue's receive")
    channel.hub.run()
    assert channel.receives == [10, 10]  # 10 delivered + 10 asked for: the window is full
    for message in delivered:
        message.ack()  # the pool finished them while the receive is on the wire
    channel.hub.run()
    assert channel.receives == [10, 10, 10]


@pytest.mark.parametrize("queue", ["reply.celery.pidbox", "celery@worker-1.celery.pidbox",
                                   "celeryev.8c1d3a2e"])
def test_remote_control_queues_are_refused_pointing_to_what_works_on_sqs(channel, queue):
    with pytest.raises(UndefinedQueueException, match=r"is Celery's remote control; .*needs "
                       r"broadcast.*python -m runtime.health.*python -m runtime.ops status"):
        channel._new_queue(queue)


def test_a_queue_that_is_simply_not_predefined_keeps_stock_s_error(channel):
    with pytest.raises(UndefinedQueueException, match="must be defined in 'predefined_queues'"):
        channel._new_queue("reports")


@pytest.mark.parametrize("error, kind", [
    (ClientError({"Error": {"Code": "AccessDenied"},
                  "ResponseMetadata": {"HTTPStatusCode": 403}}, "ReceiveMessage"),
     "QueueAccessDenied"),
    (ClientError({"Error": {"Code": "Throttling"}}, "ReceiveMessage"), "Throttling"),
    (EndpointConnectionError(endpoint_url="https://sqs.example"), "EndpointConnectionError"),
], ids=["typed", "aws-code", "network"])
def test_a_failed_receive_is_told_to_the_listeners_and_polled_again_later(
        channel, monkeypatch, error, kind):
    heard: list = []
    monkeypatch.setattr(events, "LISTENERS", [heard.append])
    channel._on_received(QUEUE, QUEUE, "https://sqs.example/123/work", 10, error,
                         callback=lambda _n: None)
    assert heard == [events.ReceiveFailed(QUEUE, kind)]
    assert len(channel.hub.pending_timers()) == 1


# far ETAs ------------------------------------------------------------------------------------
class RecordingLane:
    queue = QUEUE

    def __init__(self) -> None:
        self.held: list[str] = []
        self.parked: list[tuple[str, int]] = []

    def hold(self, handles):
        self.held.extend(handles)

    def park(self, message, delay):
        self.parked.append((message["ReceiptHandle"], delay))


def task_message(handle: str, eta_in: float | None) -> dict[str, Any]:
    eta = None if eta_in is None else \
        (datetime.now(timezone.utc) + timedelta(seconds=eta_in)).isoformat()
    envelope = {"body": "W10=", "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": {"id": f"task-{handle}", "task": "t.add", "eta": eta},
                "properties": {"body_encoding": "base64", "delivery_info": {}}}
    return {"MessageId": handle, "ReceiptHandle": handle, "Body": json.dumps(envelope)}


@pytest.mark.parametrize("url, parked", [("https://sqs.example/123/work", True),
                                         ("https://sqs.example/123/work.fifo", False)],
                         ids=["standard", "fifo"])
def test_only_tasks_due_beyond_the_hold_limit_are_parked_the_rest_delivered_and_held(
        channel, monkeypatch, caplog, url, parked):
    lane = RecordingLane()
    monkeypatch.setattr(channel, "lane", lambda _url, _name=None: lane)
    batch = [task_message("now", None), task_message("soon", 3000),
             task_message("far", 39_600 + 600)]
    with caplog.at_level("INFO", logger="runtime.transport"):
        delivered = channel._accept(QUEUE, QUEUE, url, batch)
    tags = [p["properties"]["delivery_tag"] for p in delivered]
    if parked:
        assert tags == lane.held == ["now", "soon"]
        assert lane.parked == [("far", 600)]  # what is beyond the limit, rounded up
        assert "task task-far (t.add) of queue 'work' is due at" in caplog.text
        assert "beyond eta_hold_limit (39600 s)" in caplog.text
    else:  # no per-message delay on FIFO: publishing refuses such a task instead
        assert tags == lane.held == ["now", "soon", "far"]
        assert lane.parked == []


def test_tasks_being_parked_take_room_in_the_window_until_their_copies_are_deleted(
        channel, monkeypatch):
    """Issue 18 item 1: a parked task takes no prefetch slot, so a backlog of far ETAs
    kept the receives coming while the lane's moves piled up. Counted against the
    window, they slow receiving; their deletes landing resume it."""
    go = threading.Event()
    stub = StubSqs(lambda action, _kw: go.wait(10) and {} if action == "SendMessageBatch"
                   else {})
    monkeypatch.setattr(channel, "sqs", lambda *_a, **_k: stub)
    channel.basic_qos(prefetch_count=20)
    lane = channel.lane(f"https://sqs.example/123/{QUEUE}", QUEUE)
    for i in range(15):
        lane.park(task_message(f"far-{i}", 50_000), 900)
    channel._schedule_queue(QUEUE)
    channel.hub.run()
    assert channel.receives == []  # 5 slots left: less than a batch
    read_fd = channel.receiver._read_fd
    go.set()
    while channel.receives != [10]:  # the lane's deletes landing wake the hub
        assert select.select([read_fd], [], [], 10)[0] == [read_fd], "a wake-up"
        channel.hub.run()
    lane.close(timeout=5)
    assert lane.moves_pending == 0


@pytest.mark.parametrize("value", [-1, 39_601, 43_200, "11h", True])
def test_an_eta_hold_limit_the_cap_cannot_honour_stops_the_channel_opening(value):
    connection = Connection(transport=Transport, transport_options={
        "region": "us-east-1", "eta_hold_limit": value,
        "predefined_queues": {QUEUE: {"url": f"https://sqs.example/123/{QUEUE}"}}})
    with pytest.raises(ConfigError, match=r"eta_hold_limit: must be 0\.\.39600 seconds .*got"):
        connection.channel()


def test_a_fifo_task_due_beyond_the_hold_limit_is_refused_before_any_request(
        channel, monkeypatch):
    requests: list[Any] = []
    monkeypatch.setattr(channel, "sqs", lambda *a, **k: requests.append(a))
    monkeypatch.setattr(channel, "_new_queue", lambda *a, **k: requests.append(a))
    eta = (datetime.now(timezone.utc) + timedelta(hours=12)).isoformat()
    with pytest.raises(EtaTooFar, match=r"SendMessage on queue 'orders.fifo' failed: EtaTooFar "
                       rf"\(ETA {eta[:16]}.* is 4320\d s away, eta_hold_limit is 39600 s\)"):
        channel._put("orders.fifo", {"headers": {"id": "t1", "eta": eta}, "properties": {}})
    assert requests == []


# the check before consuming ----------------------------------------------------------------
def test_each_queue_is_checked_once_before_it_is_consumed(channel, monkeypatch):
    stub = StubSqs()
    monkeypatch.setattr(channel, "sqs", lambda *_a, **_k: stub)
    channel.basic_consume(QUEUE, False, lambda _m: None, "tag-1")
    channel.basic_cancel("tag-1")
    channel.basic_consume(QUEUE, False, lambda _m: None, "tag-2")  # as after a reconnect
    assert stub.calls == [("GetQueueAttributes", {"QueueUrl": f"https://sqs.example/123/{QUEUE}",
                                                  "AttributeNames": ["QueueArn"]})]


def test_a_declared_queue_is_not_asked_about_again(channel, monkeypatch):
    """Declaring reads the queue's size (stock's GetQueueAttributes): it answered."""
    stub = StubSqs(lambda _a, _kw: {"Attributes": {"ApproximateNumberOfMessages": "0"}})
    monkeypatch.setattr(channel, "sqs", lambda *_a, **_k: stub)
    channel.queue_declare(QUEUE)
    channel.basic_consume(QUEUE, False, lambda _m: None, "tag-1")
    assert [action for action, _kw in stub.calls] == ["GetQueueAttributes"]


def test_a_queue_that_fails_its_check_is_not_consumed_and_says_so(channel, monkeypatch, caplog):
    def gone(_action, _kwargs):
        raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}},
                          "GetQueueAttributes")
    monkeypatch.setattr(channel, "sqs", lambda *_a, **_k: StubSqs(gone))
    with pytest.raises(QueueNotFound), caplog.at_level("CRITICAL"):
        channel.basic_consume(QUEUE, False, lambda _m: None, "tag-1")
    assert f"queue URL https://sqs.example/123/{QUEUE}" in caplog.text
    assert "not consuming, the worker stops" in caplog.text
    assert channel._consumers == set() and channel.hub.soon == []


def test_a_publish_goes_through_the_publish_client_and_names_the_task_when_it_fails(
        channel, monkeypatch):
    """runtime.publishing's retry policy: its bounded client, then PublishError."""
    profiles: list[str] = []

    def down(_action, _kwargs):
        raise EndpointConnectionError(endpoint_url="https://sqs.example")

    class Clients:
        def client(self, _service, _role, profile):
            profiles.append(profile)
            return StubSqs(down)
    monkeypatch.setattr(channel, "_credentials", Clients())
    with pytest.raises(PublishError) as raised:
        channel._put(QUEUE, {"body": "e30=", "headers": {"id": "task-9"},
                             "properties": {"body_encoding": "base64"}})
    assert raised.value.failed == {"task-9": "EndpointConnectionError"}
    assert profiles == ["publish"]


def test_each_queue_takes_messages_up_to_its_own_limit(monkeypatch):
    """A queue's ``max_message_bytes`` (its MaximumMessageSize, as rendered) is what a
    publish is held to: a 600 KB body (800 KB in base64) goes to the 1 MiB queue, the
    256 KiB one refuses it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    urls = {name: f"https://sqs.example/123/{name}" for name in ("small", "large")}
    connection = Connection(transport=Transport, transport_options={
        "region": "us-east-1", "predefined_queues": {
            "small": {"url": urls["small"], "max_message_bytes": 262_144},
            "large": {"url": urls["large"], "max_message_bytes": 1_048_576}}})
    channel = connection.channel()
    stub = StubSqs()

    class Clients:
        def client(self, _service, _role, _profile):
            return stub
    monkeypatch.setattr(channel, "_credentials", Clients())
    body = "x" * 600_000
    channel._put("large", {"body": body, "headers": {"id": "t1"}, "properties": {}})
    with pytest.raises(MessageTooLarge, match=r"\(800\d{3} bytes, the queue's limit is 262144 "
                                              r"bytes\)"):
        channel._put("small", {"body": body, "headers": {"id": "t2"}, "properties": {}})
    assert [(action, kwargs["QueueUrl"]) for action, kwargs in stub.calls] == [
        ("SendMessage", urls["large"])]
