"""Revoke on SQS, without broadcast: ``AsyncResult.revoke()`` writes the revocation to
the result table, every worker reads it every few seconds, and Celery discards the
task before it starts; ``terminate=True`` is refused, not ignored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.fleet import (create_queue, create_result_table, sqs_client, worker_document,
                             worker_env)

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
    (tmp_path / "rtasks.py").write_text(TASKS)
    runs = tmp_path / "runs.txt"
    runs.touch()
    env = worker_env(tmp_path, moto.endpoint_url, KIT_TEST_RUNS=str(runs),
                     CELERY_SQS_KIT_CONFIG_JSON=json.dumps(worker_document(
                         {name: queue}, default_queue=name, result_table=table)))
    return env, runs, tmp_path


def client(env, cwd, code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_revoked_task_never_starts_and_its_neighbour_runs(fleet):
    env, runs, work = fleet
    with CeleryWorker("rtasks", env, work / "worker.log", pool="threads", concurrency=2) as w:
        started = time.monotonic()
        out = client(env, work, (
            "from rtasks import record\n"
            "doomed = record.apply_async(('doomed',), countdown=6)\n"
            "kept = record.apply_async(('kept',), countdown=6)\n"
            "doomed.revoke()\n"
            "print(kept.get(timeout=60))\n"
            "import time; time.sleep(1)\n"
            "print(doomed.state)\n"))
        assert out.splitlines() == ["kept", "REVOKED"]
        assert runs.read_text().split() == ["kept"]
        assert time.monotonic() - started < 30
        assert "Discarding revoked task: rtasks.record[" in w.log_text()


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
