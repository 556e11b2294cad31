"""runtime.receiver: long polls on queue threads, results handed to the hub thread,
and nothing received left hidden when the receiver closes."""

from __future__ import annotations

import threading
import time

from runtime.receiver import Receiver
from tests.unit.test_transport import RecordingHub


def test_results_are_handed_to_the_hub_thread():
    """The job runs on the queue's thread; its result reaches ``done`` on the thread
    that runs the hub (here the test's own), never on the receiving thread."""
    hub, done = RecordingHub(), []
    receiver = Receiver(hub)
    job_threads: list[threading.Thread] = []

    def job():
        job_threads.append(threading.current_thread())
        return ["m1"]
    receiver.submit("q", job, lambda r: done.append((r, threading.current_thread())),
                    lambda r: None)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        hub.run()
        time.sleep(0.01)
    assert done == [(["m1"], threading.current_thread())]
    assert job_threads and job_threads[0] is not threading.current_thread()
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
