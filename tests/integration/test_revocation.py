"""Revoke on SQS, without broadcast: ``AsyncResult.revoke()`` writes the revocation to
the revocations table, every worker reads it every few seconds, and Celery discards the
task before it starts; ``terminate=True`` is refused, not ignored.

Each step waits on what the worker says it did (it logs each revocation it applies), never
on a sleep: a revoked task's ETA is set only once the revocation is applied, or far enough
ahead that the wait for it is the test's only dependence on timing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.fleet import (create_queue, create_result_table, create_revocation_table,
                             sqs_client, worker_document, worker_env)
from tests.integration.fleet import wait_for

pytestmark = pytest.mark.integration

TASKS = '''
import os
from celery import Celery

app = Celery("rtasks")
app.config_from_object("runtime.celeryconfig")


@app.task
def record(tag):
    with open(os.environ["KIT_TEST_RUNS"], "a") as runs:
        runs.write(tag + "\\n")
    return tag
'''


@pytest.fixture
def fleet(moto, tmp_path):
    name = f"r{uuid.uuid4().hex[:10]}"
    queue = create_queue(sqs_client(moto.endpoint_url), name, visibility=60, wait=1)
    table = create_result_table(moto.endpoint_url, f"{name}-results")
    revocations = create_revocation_table(moto.endpoint_url, f"{name}-revocations")
    (tmp_path / "rtasks.py").write_text(TASKS)
    runs = tmp_path / "runs.txt"
    runs.touch()
    env = worker_env(tmp_path, moto.endpoint_url, KIT_TEST_RUNS=str(runs),
                     CELERY_SQS_KIT_CONFIG_JSON=json.dumps(worker_document(
                         {name: queue}, default_queue=name, result_table=table,
                         revocation_table=revocations)))
    return env, runs, tmp_path


def client(env, cwd, code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


WAIT = 90.0
"""Generous: two shared cores run this beside other engineers' suites."""

STATE_WHEN_SETTLED = (
    "import time\n"
    "from rtasks import app\n"
    "doomed = app.AsyncResult({doomed!r})\n"
    "deadline = time.monotonic() + {wait}\n"
    "while doomed.state != 'REVOKED' and time.monotonic() < deadline:\n"
    "    time.sleep(0.2)\n"
    "print(doomed.state)\n")


def applied(worker: CeleryWorker, task_id: str) -> bool:
    return bool(re.search(rf"applying \d+ new revocation\(s\): [^\n]*{task_id}",
                          worker.log_text()))


def test_a_revoked_task_never_starts_and_its_neighbour_runs(fleet):
    env, runs, work = fleet
    doomed = str(uuid.uuid4())
    with CeleryWorker("rtasks", env, work / "worker.log", pool="threads", concurrency=2) as w:
        client(env, work, f"from rtasks import app\napp.AsyncResult({doomed!r}).revoke()\n")
        wait_for(lambda: applied(w, doomed), WAIT, "the worker to apply the revocation")
        out = client(env, work, (
            "from rtasks import record\n"
            f"record.apply_async(('doomed',), countdown=2, task_id={doomed!r})\n"
            "kept = record.apply_async(('kept',), countdown=2)\n"
            f"print(kept.get(timeout={WAIT}))\n"))
        assert out == "kept"
        assert client(env, work, STATE_WHEN_SETTLED.format(doomed=doomed, wait=WAIT)) == "REVOKED"
        assert runs.read_text().split() == ["kept"]
        assert f"Discarding revoked task: rtasks.record[{doomed}]" in w.log_text()


def test_a_task_held_for_its_countdown_is_discarded_when_it_is_due(fleet):
    """Revoked after the worker received it: Celery checks again when its ETA comes."""
    env, runs, work = fleet
    doomed = str(uuid.uuid4())
    with CeleryWorker("rtasks", env, work / "worker.log", pool="threads", concurrency=2) as w:
        client(env, work, ("from rtasks import record\n"
                           f"record.apply_async(('doomed',), countdown=30, task_id={doomed!r})\n"))
        wait_for(lambda: f"Task rtasks.record[{doomed}] received" in w.log_text(), WAIT,
                 "the worker to hold the task")
        client(env, work, f"from rtasks import app\napp.AsyncResult({doomed!r}).revoke()\n")
        wait_for(lambda: applied(w, doomed), WAIT, "the worker to apply the revocation")
        assert client(env, work, STATE_WHEN_SETTLED.format(doomed=doomed, wait=WAIT)) == "REVOKED"
        assert runs.read_text().split() == []
        assert f"Discarding revoked task: rtasks.record[{doomed}]" in w.log_text()


def test_terminate_is_refused_with_a_clear_error(fleet):
    env, _runs, work = fleet
    out = client(env, work, (
        "from rtasks import app\n"
        "from runtime.errors import UsageError\n"
        "try:\n"
        "    app.control.revoke('some-task-id', terminate=True)\n"
        "except UsageError as error:\n"
        "    print(error)\n"))
    assert "revoke(terminate=True) cannot reach the process running a task on SQS" in out
