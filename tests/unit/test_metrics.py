"""runtime.metrics: the EMF lines (structure and figures, on a fake clock), task outcomes
counted from the request's callbacks, and the transport's events (``runtime.events``)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import Ignore, Retry

from runtime import events, metrics
from runtime.errors import ConfigError


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def parse(lines: list[str]) -> dict[str, dict]:
    return {doc["Queue"]: doc for doc in map(json.loads, lines)}


def test_line_is_emf_with_namespace_queue_dimension_and_every_metric_declared():
    clock = Clock()
    recorder = metrics.Recorder(clock)
    recorder.count("celery", metrics.TASKS_RECEIVED, 3)
    recorder.runtime("celery", 0.25)
    clock.now += 60
    (doc,) = map(json.loads, recorder.lines())
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "CelerySqsKit"
    assert directive["Dimensions"] == [["Queue"]]
    assert doc["_aws"]["Timestamp"] == 1_767_225_660_000
    declared = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert declared == {**{name: "Count" for name in metrics.COUNTERS},
                        "RuntimeP50": "Milliseconds", "RuntimeP95": "Milliseconds"}
    assert all(isinstance(doc[name], (int, float)) for name in declared)
    assert doc["Queue"] == "celery" and doc["IntervalSeconds"] == 60


def test_figures_are_per_queue_and_per_interval_with_nearest_rank_percentiles():
    clock = Clock()
    recorder = metrics.Recorder(clock)
    recorder.watch(["celery", "reports"])
    for seconds in range(1, 21):  # 1..20 s
        recorder.runtime("celery", seconds)
    recorder.count("celery", metrics.TASKS_SUCCEEDED, 18)
    recorder.count("celery", metrics.TASKS_FAILED, 2)
    recorder.count("celery", metrics.RECEIVE_ERRORS, kind="Throttling")
    recorder.count("celery", metrics.RECEIVE_ERRORS, kind="QueueAccessDenied")
    recorder.count("celery", metrics.RECEIVE_ERRORS, kind="Throttling")
    clock.now += 60
    docs = parse(recorder.lines())
    celery, reports = docs["celery"], docs["reports"]
    assert (celery["TasksSucceeded"], celery["TasksFailed"], celery["TasksReceived"]) == (18, 2, 0)
    assert (celery["RuntimeP50"], celery["RuntimeP95"]) == (10_000, 19_000)
    assert celery["ReceiveErrors"] == 3
    assert celery["ReceiveErrorTypes"] == {"Throttling": 2, "QueueAccessDenied": 1}
    # a watched queue with nothing to say reads 0, and has no runtime metric at all
    assert reports["TasksSucceeded"] == 0 and "RuntimeP95" not in reports
    assert "RuntimeP95" not in {m["Name"] for m in
                                reports["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    clock.now += 60
    assert parse(recorder.lines())["celery"]["TasksSucceeded"] == 0  # a new interval


class FakeRequest:
    """What observe_request uses of celery.worker.request.Request, with Celery's own
    wiring: on_success hands a failed run to on_failure(return_ok=True)."""

    def __init__(self, queue: str = "celery") -> None:
        self.delivery_info = {"routing_key": queue}
        self.calls: list[str] = []

    def on_success(self, failed__retval__runtime, **_):
        self.calls.append("success")
        if failed__retval__runtime[0]:
            return self.on_failure(failed__retval__runtime[1], return_ok=True)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        self.calls.append("failure")


def run(outcome) -> tuple[dict, FakeRequest]:
    clock = Clock()
    recorder = metrics.Recorder(clock)
    request = FakeRequest()
    metrics.observe_request(request, recorder)
    outcome(request)
    clock.now += 60
    return parse(recorder.lines())["celery"], request


def failed(exc: BaseException, runtime: float = 0.5):
    return lambda request: request.on_success((1, SimpleNamespace(exception=exc), runtime))


@pytest.mark.parametrize("outcome, figures", [
    (lambda r: r.on_success((0, 42, 0.5)), (1, 1, 0, 0)),
    (failed(ValueError("boom")), (1, 0, 1, 0)),
    (failed(Retry()), (1, 0, 0, 1)),
    (failed(Ignore()), (1, 0, 0, 0)),
    (failed(ExceptionWithTraceback(Retry(), "tb")), (1, 0, 0, 1)),  # from a prefork child
])
def test_each_outcome_is_counted_once_and_the_request_still_handles_it(outcome, figures):
    doc, request = run(outcome)
    assert (doc["TasksReceived"], doc["TasksSucceeded"], doc["TasksFailed"],
            doc["TasksRetried"]) == figures
    assert doc["RuntimeP50"] == 500
    assert request.calls[0] == "success"
    assert "on_success" not in request.__dict__  # the wrappers let go of the request


def test_a_run_the_pool_itself_failed_counts_as_failed():
    doc, request = run(lambda r: r.on_failure(SimpleNamespace(exception=MemoryError())))
    assert (doc["TasksFailed"], request.calls) == (1, ["failure"])
    assert "RuntimeP50" not in doc


def test_transport_events_become_extensions_dlq_moves_lane_errors_and_receive_errors():
    clock = Clock()
    recorder = metrics.Recorder(clock)
    for event in (
        events.Extended("celery", 10),
        events.DeadLettered("celery", 1, "rejected"),
        events.DeadLettered("celery", 1, "poison"),
        events.WorkFailed("celery", "delete", "ReceiptHandleIsInvalid"),
        events.WorkFailed("celery", "delete", "Throttling"),
        events.ReceiveFailed("celery", "QueueAccessDenied"),
        events.ReceiveFailed("celery", "Throttling"),
        events.ReceiveFailed("celery", "EndpointConnectionError"),
        events.Extended(None, 1),
    ):
        metrics.count_event(recorder, event)
    clock.now += 60
    docs = parse(recorder.lines())
    doc = docs["celery"]
    assert doc["VisibilityExtensions"] == 10
    assert doc["DeadLetterMoves"] == 2
    assert doc["DeadLetterReasons"] == {"rejected": 1, "poison": 1}
    assert doc["LaneErrors"] == 2
    assert doc["LaneErrorTypes"] == {"delete/ReceiptHandleIsInvalid": 1, "delete/Throttling": 1}
    assert doc["ReceiveErrors"] == 3
    assert doc["ReceiveErrorTypes"] == {"QueueAccessDenied": 1, "Throttling": 1,
                                        "EndpointConnectionError": 1}
    assert docs[metrics.UNKNOWN_QUEUE]["VisibilityExtensions"] == 1


def test_emitter_writes_once_per_interval_and_the_rest_at_stop():
    wall, monotonic = Clock(), Clock(100.0)
    recorder = metrics.Recorder(wall)
    stream = io.StringIO()
    emitter = metrics.Emitter(recorder, stream, 60, clock=monotonic)
    recorder.count("celery", metrics.TASKS_RECEIVED)
    assert emitter.tick() == 60 and stream.getvalue() == ""
    monotonic.now += 60
    assert emitter.tick() == 60
    assert parse(stream.getvalue().splitlines())["celery"]["TasksReceived"] == 1
    recorder.count("celery", metrics.TASKS_RECEIVED, 4)
    emitter.stop()
    assert json.loads(stream.getvalue().splitlines()[-1])["TasksReceived"] == 4


def test_install_listens_to_the_transport_s_events_once(monkeypatch):
    recorder = metrics.Recorder(Clock())
    monkeypatch.setattr(metrics, "RECORDER", recorder)
    monkeypatch.setattr(events, "LISTENERS", [])
    metrics.install()
    metrics.install()  # idempotent: not counted twice
    events.tell(events.Extended("celery", 10))
    events.tell(events.DeadLettered("celery", 1, "rejected"))
    doc = parse(recorder.lines())["celery"]
    assert (doc["VisibilityExtensions"], doc["DeadLetterMoves"]) == (10, 1)


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_interval_stops_the_worker_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(metrics.INTERVAL_ENV, value)
    with pytest.raises(ConfigError, match="CELERY_SQS_KIT_METRICS_INTERVAL"):
        metrics.install()


def test_interval_defaults_to_a_minute(monkeypatch):
    monkeypatch.delenv(metrics.INTERVAL_ENV, raising=False)
    assert metrics.configured_interval() == 60
