"""runtime.visibility: held messages are extended before they reappear, up to 12 h."""

from __future__ import annotations

from runtime.visibility import MAX_HOLD_SECONDS, VisibilityKeeper
from tests.unit.stub_sqs import StubSqs

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keeper(stub: StubSqs, clock: Clock) -> VisibilityKeeper:
    return VisibilityKeeper(lambda _q: stub, clock=clock)


def test_nothing_is_extended_while_more_than_half_the_window_is_left():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    k.hold("m1", queue="work", url=URL, visibility_timeout=60)
    clock.now += 29
    k._tick()
    assert stub.calls == []
    k.close()


def test_a_held_message_is_extended_by_its_queue_timeout_before_it_reappears():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    k.hold("m1", queue="work", url=URL, visibility_timeout=60)
    for _ in range(6):  # three full windows, ticking every quarter window
        clock.now += 15
        k._tick()
    entries = [e for action, kw in stub.calls for e in kw["Entries"]]
    assert all(e["VisibilityTimeout"] == 60 and e["ReceiptHandle"] == "m1" for e in entries)
    # never let the message become visible: each extension lands before visible_at
    assert k.held()[0].visible_at > clock.now
    assert len(entries) >= 2
    k.close()


def test_extension_stops_at_ack():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    k.hold("m1", queue="work", url=URL, visibility_timeout=60)
    k.forget("m1")
    clock.now += 45
    k._tick()
    assert stub.calls == []
    k.close()


def test_extensions_never_pass_the_twelve_hour_cap():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    k.hold("m1", queue="work", url=URL, visibility_timeout=43_200)
    clock.now += MAX_HOLD_SECONDS - 100
    k._tick()
    (entry,) = stub.calls[-1][1]["Entries"]
    assert entry["VisibilityTimeout"] <= 100
    k.close()


def test_many_messages_are_extended_in_batches_of_ten():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    for i in range(23):
        k.hold(f"m{i}", queue="work", url=URL, visibility_timeout=60)
    clock.now += 31
    k._tick()
    assert sorted(len(kw["Entries"]) for _a, kw in stub.calls) == [3, 10, 10]
    k.close()


def test_release_makes_messages_visible_at_once_and_stops_tracking_them():
    stub, clock = StubSqs(), Clock()
    k = keeper(stub, clock)
    k.hold("m1", queue="work", url=URL, visibility_timeout=60)
    k.hold("m2", queue="work", url=URL, visibility_timeout=60)
    k.release_all()
    (action, kwargs), = stub.calls
    assert action == "ChangeMessageVisibilityBatch"
    assert {e["VisibilityTimeout"] for e in kwargs["Entries"]} == {0}
    assert k.held() == []
    k.close()
