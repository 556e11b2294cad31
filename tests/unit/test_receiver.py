"""runtime.receiver: long polls on queue threads, results handed to the hub thread,
and nothing received left hidden when the receiver closes."""

from __future__ import annotations

import threading

from runtime.receiver import Receiver
from tests.unit.test_transport import RecordingHub


def test_results_are_handed_to_the_hub_thread():
    hub, done = RecordingHub(), []
    receiver = Receiver(hub)
    finished = threading.Event()
    receiver.submit("q", lambda: ["m1"], lambda r: (done.append(r), finished.set()),
                    lambda r: None)
    deadline = threading.Event()
    while not done and not deadline.wait(0.01):
        hub.run()
    assert done == [["m1"]]
    receiver.close()


def test_a_result_that_arrives_after_close_is_undone_not_dropped():
    """Issue 13 item 13: a batch received as shutdown began is given back."""
    hub, undone, done = RecordingHub(), [], []
    receiver = Receiver(hub)
    polling, returned = threading.Event(), threading.Event()

    def long_poll():
        polling.set()
        returned.wait(5)
        return ["late"]
    receiver.submit("q", long_poll, done.append, lambda r: (undone.append(r)))
    assert polling.wait(5)
    receiver.close()
    returned.set()
    for _ in range(500):
        if undone:
            break
        threading.Event().wait(0.01)
    assert undone == [["late"]] and done == []


def test_close_runs_every_waiting_result_even_when_one_fails():
    """Issue 13 item 5: one failing callback must not strand the others."""
    hub, seen = RecordingHub(), []
    receiver = Receiver(hub)
    arrived = threading.Event()

    def fail(_result):
        raise AttributeError("'NoneType' object has no attribute 'polling_interval'")
    receiver.submit("a", lambda: ["a1"], fail, lambda r: None)
    receiver.submit("b", lambda: ["b1"], lambda r: (seen.append(r), arrived.set()),
                    lambda r: None)
    for _ in range(500):
        if len(receiver._results) == 2:
            break
        threading.Event().wait(0.01)
    receiver.close()
    assert seen == [["b1"]]
