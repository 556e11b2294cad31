"""The receive window covers the round trip: a fast worker may hold the prefetch
count plus what it runs in one full receive's round trip (at most the prefetch count
again, and what the receives in flight can bring); slow tasks, idling, long polls'
waits and slow or retried receives add nothing."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.receive_window import ReceiveWindow

QUEUE = "work"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Window:
    """A queue's QoS as the window reads it: a prefetch count and what is unacked."""

    def __init__(self, prefetch_count: int) -> None:
        self.prefetch_count = prefetch_count
        self.held = 0

    def unacked(self) -> int:
        return self.held


class Hub:
    def call_later(self, _delay: float, _callback: Any, *_args: Any) -> Any:
        return None


@pytest.fixture
def clock() -> Clock:
    return Clock()


def window_of(qos: Window, clock: Clock, receives: list[int]) -> ReceiveWindow:
    return ReceiveWindow(qos, Hub(), receive=lambda _queue, count: receives.append(count),
                         wake=lambda callback: callback(), batch_wait=0.1, clock=clock)


def run_for(window: ReceiveWindow, clock: Clock, *, seconds: float, rate: float,
            round_trip: float) -> None:
    """Full receives of 10 that each take ``round_trip``, delivering ``rate`` a second."""
    for _ in range(int(seconds * rate / 10)):
        window._start(QUEUE, 10)
        clock.now += round_trip
        window.received(QUEUE, 10, 10, round_trip)
        clock.now += 10 / rate - round_trip


def test_a_fast_worker_s_window_grows_by_what_one_round_trip_is_worth(clock):
    qos = Window(prefetch_count=20)
    window = window_of(qos, clock, [])
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.015)
    assert window.round_trip == pytest.approx(0.015)
    assert 13 <= window.lookahead() <= 15  # 1000 a second x 15 ms


def test_the_window_grows_by_the_prefetch_count_at_most(clock):
    window = window_of(Window(prefetch_count=20), clock, [])
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.08)
    assert window.lookahead() == 20


@pytest.mark.parametrize("rate", [2.0, 40.0])
def test_slow_tasks_add_nothing_to_the_window(clock, rate):
    window = window_of(Window(prefetch_count=20), clock, [])
    run_for(window, clock, seconds=30, rate=rate, round_trip=0.015)
    assert window.lookahead() == 0  # under one message per round trip


def test_an_idle_worker_s_window_shrinks_back_to_the_prefetch_count(clock):
    window = window_of(Window(prefetch_count=20), clock, [])
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.015)
    clock.now += 5
    assert window.lookahead() == 0


@pytest.mark.parametrize("got", [3, 10], ids=["some", "a full batch"])
def test_a_long_poll_s_wait_is_not_taken_for_a_round_trip(clock, got):
    window = window_of(Window(prefetch_count=20), clock, [])
    window._start(QUEUE, 10)  # the queue was idle: a long poll
    clock.now += 0.4
    window.received(QUEUE, 10, got, 0.4)  # messages arrived during the wait
    assert window.round_trip is None
    assert window.lookahead() == 0


def test_a_slow_or_retried_receive_is_not_taken_for_a_round_trip(clock):
    window = window_of(Window(prefetch_count=20), clock, [])
    run_for(window, clock, seconds=1, rate=1000, round_trip=0.015)
    window._start(QUEUE, 10)
    window.received(QUEUE, 10, 10, 3.5)  # botocore retried it after a read timeout
    assert window.round_trip == pytest.approx(0.015)


def test_a_window_widened_for_eta_tasks_does_not_widen_the_lookahead(clock):
    qos = Window(prefetch_count=20)
    window = window_of(qos, clock, [])
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.08)
    qos.prefetch_count = 1020  # Celery holds 1000 ETA tasks
    assert window.lookahead() == 40  # what 4 receives in flight can bring


def test_a_busy_queue_receives_into_the_lookahead_beyond_the_prefetch_count(clock):
    qos = Window(prefetch_count=20)
    receives: list[int] = []
    window = window_of(qos, clock, receives)
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.015)
    qos.held = 20  # every prefetch slot taken
    receives.clear()
    window.schedule(QUEUE)
    assert receives == [10]  # the lookahead (14) has room for one more batch, not two


def test_without_a_prefetch_limit_there_is_no_lookahead(clock):
    window = window_of(Window(prefetch_count=0), clock, [])
    run_for(window, clock, seconds=5, rate=1000, round_trip=0.015)
    assert window.lookahead() == 0


def most_in_flight(idle_queues: int, clock: Clock) -> int:
    """Run a busy queue through the window's own scheduling for 2 s (receives of 15 ms
    that come back full, tasks acked at once) beside ``idle_queues`` queues whose long
    polls stay on the wire; the most receives the busy queue had in flight at once."""
    qos = Window(prefetch_count=20)
    wire: list[tuple[str, int, float]] = []  # receives in flight: queue, asked, started at
    window = ReceiveWindow(qos, Hub(),
                           receive=lambda queue, count: wire.append((queue, count, clock.now)),
                           wake=lambda callback: callback(), batch_wait=0.1, clock=clock)
    for n in range(idle_queues):
        window.schedule(f"idle{n}")
    window.schedule(QUEUE)
    most = 0
    end = clock.now + 2
    while clock.now < end:
        most = max(most, sum(1 for queue, *_ in wire if queue == QUEUE))
        oldest = next(r for r in wire if r[0] == QUEUE)
        wire.remove(oldest)
        clock.now = max(clock.now, oldest[2] + 0.015)
        window.received(QUEUE, oldest[1], oldest[1], 0.015)
        window.schedule(QUEUE)  # what the channel does when a receive completed
    return most


def test_idle_queues_long_polls_do_not_take_a_busy_queue_s_receives(clock):
    alone = most_in_flight(0, clock)
    assert alone == 4  # receives_in_flight, the window's lookahead allowing it
    assert most_in_flight(3, Clock()) == alone
