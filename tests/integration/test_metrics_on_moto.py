"""runtime.metrics in a real ``celery worker`` on moto, prefork and threads: the worker's
own output carries EMF lines whose figures add up to what its tasks did."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from local_aws.celery_worker import CeleryWorker
from runtime import metrics
from tests.integration.fleet import lines, publish, recording_fleet, wait_for

pytestmark = pytest.mark.integration

TASKS = '''
from ttasks import app, quick, refuse, record


@app.task
def boom(tag):
    record("boom", tag)
    raise ValueError("boom")


@app.task(bind=True)
def again(self, tag):
    record("again", tag, self.request.retries)
    if self.request.retries < 1:
        raise self.retry(countdown=0)
'''
EXPECTED = {"TasksReceived": 6, "TasksSucceeded": 3, "TasksFailed": 2, "TasksRetried": 1,
            "DeadLetterMoves": 1, "ReceiveErrors": 0}
"""quick x2; boom fails; refuse is rejected to the DLQ; again retries once (two receipts)."""


def emf_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith('{"_aws"')]


def totals(docs: list[dict], queue: str) -> Counter:
    summed: Counter = Counter()
    for doc in docs:
        if doc["Queue"] == queue:
            summed.update({name: doc[name] for name in metrics.COUNTERS})
    return summed


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_worker_writes_one_emf_line_per_queue_per_interval_with_its_tasks_figures(
        moto, tmp_path, pool):
    _sqs, queue, env, runs = recording_fleet(
        moto.endpoint_url, moto.endpoint_url, tmp_path, visibility=60,
        extra_config="\nfrom runtime import metrics\nmetrics.install()\n")
    (tmp_path / "mtasks.py").write_text(TASKS)
    env = {**env, metrics.INTERVAL_ENV: "1"}
    publish(env, "from mtasks import quick, boom, refuse, again\n"
                 "quick.delay('a'); quick.delay('b'); boom.delay('c'); refuse.delay('d');"
                 " again.delay('e')", tmp_path)
    name = queue["url"].rsplit("/", 1)[1]
    with CeleryWorker("mtasks", env, tmp_path / "worker.log", pool=pool, concurrency=2) as w:
        wait_for(lambda: len(lines(runs)) == 6, 60, "the six runs")
        wait_for(lambda: all(totals(emf_lines(w.log_text()), name)[k] == v
                             for k, v in EXPECTED.items()), 30, "the figures in the log")
        wait_for(lambda: len(emf_lines(w.log_text())) >= 3, 10, "lines for quiet intervals")
        docs = emf_lines(w.log_text())
    mine = [doc for doc in docs if doc["Queue"] == name]
    assert {doc["Queue"] for doc in docs} == {name}
    assert len(mine) >= 3 and all(0.5 < doc["IntervalSeconds"] < 3 for doc in mine[1:-1])
    assert {doc["Pid"] for doc in mine} == {w.pid}  # the main process, not a pool child
    assert any("RuntimeP95" in doc for doc in mine)
    assert totals(docs, name)["TasksReceived"] == EXPECTED["TasksReceived"]
    (directive,) = mine[0]["_aws"]["CloudWatchMetrics"]
    assert (directive["Namespace"], directive["Dimensions"]) == ("CelerySqsKit", [["Queue"]])
    print(f"\nsample EMF line ({pool}): {next(json.dumps(d) for d in mine if 'RuntimeP95' in d)}")
