"""The health check against a real ``celery worker`` configured by runtime.celeryconfig:
healthy while its event loop runs, stale when the loop stops, not running once killed,
a dead pool process named until the pool replaces it, lost credentials named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.counting_proxy import CountingProxy
from local_aws.fleet import create_queue, sqs_client, worker_document, worker_env
from tests.integration.fleet import wait_for

pytestmark = pytest.mark.integration

TASKS = '''
from celery import Celery

app = Celery("htasks")
app.config_from_object("runtime.celeryconfig")


@app.task
def noop():
    pass
'''


def health_stage(moto_endpoint: str, worker_endpoint: str, work: Path, **extra: str
                 ) -> dict[str, str]:
    """A queue on moto and the environment of a worker (and of its health check) that
    reaches it through ``worker_endpoint``, with its state file in ``work``."""
    name = f"h{uuid.uuid4().hex[:10]}"
    queue = create_queue(sqs_client(moto_endpoint), name, visibility=30, wait=1)
    (work / "htasks.py").write_text(TASKS)
    return worker_env(work, worker_endpoint,
                      CELERY_SQS_KIT_CONFIG_JSON=json.dumps(
                          worker_document({name: queue}, default_queue=name)),
                      CELERY_SQS_KIT_HEALTH_FILE=str(work / "health.json"), **extra)


def health(env: dict[str, str]) -> tuple[int, str]:
    """``python -m runtime.health``: its exit code and its one line."""
    done = subprocess.run([sys.executable, "-m", "runtime.health"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines
    return done.returncode, lines[0]


def test_health_follows_the_worker_through_a_stopped_loop_and_a_kill(moto, tmp_path):
    env = health_stage(moto.endpoint_url, moto.endpoint_url, tmp_path,
                       CELERY_SQS_KIT_HEALTH_MAX_AGE="2")
    with CeleryWorker("htasks", env, tmp_path / "worker.log", pool="threads",
                      concurrency=1) as worker:
        code, line = wait_for(lambda: (r := health(env))[0] == 0 and r, 10, "a healthy worker")
        assert line.startswith(f"healthy: pid {worker.pid},")

        os.kill(worker.pid, signal.SIGSTOP)
        try:
            code, line = wait_for(lambda: (r := health(env))[0] == 1 and r, 10, "a stale loop")
            assert line.startswith("consumer loop stale: "), line
        finally:
            os.kill(worker.pid, signal.SIGKILL)
        code, line = wait_for(lambda: "not running" in (r := health(env))[1] and r, 10,
                              "the kill to show")
        assert (code, line) == (1, f"worker process not running: pid {worker.pid} "
                                   f"(from {tmp_path / 'health.json'})")


def test_health_names_a_dead_pool_process_until_the_pool_replaces_it(moto, tmp_path):
    """A prefork child killed while its worker cannot replace it (the main process
    stopped, within the staleness bound) is named; once the worker runs again the pool
    replaces it and the check is healthy with the new process."""
    env = health_stage(moto.endpoint_url, moto.endpoint_url, tmp_path,
                       CELERY_SQS_KIT_HEALTH_MAX_AGE="60")
    state_file = tmp_path / "health.json"
    with CeleryWorker("htasks", env, tmp_path / "worker.log", pool="prefork",
                      concurrency=2) as worker:
        wait_for(lambda: health(env)[0] == 0, 10, "a healthy worker")
        victim = json.loads(state_file.read_text())["pool_pids"][0]
        os.kill(worker.pid, signal.SIGSTOP)  # nothing reaps or replaces the child now
        try:
            os.kill(victim, signal.SIGKILL)
            code, line = wait_for(lambda: (r := health(env))[0] == 1 and r, 10, "the dead child")
            assert line == f"pool process not running: pid {victim} (worker pid {worker.pid})"
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: health(env)[0] == 0 and
                 victim not in json.loads(state_file.read_text())["pool_pids"], 40,
                 "the pool to replace its process")
        assert len(json.loads(state_file.read_text())["pool_pids"]) == 2


@pytest.mark.fault
def test_health_names_lost_credentials_and_recovers_with_them(moto, tmp_path):
    """Receives refused (ExpiredToken) for longer than the bound make the worker
    unhealthy with the transport's error; once they complete again it is healthy. The
    prefork pool's processes are recorded."""
    with CountingProxy(moto.endpoint_url) as proxy:
        env = health_stage(moto.endpoint_url, proxy.endpoint_url, tmp_path,
                           CELERY_SQS_KIT_HEALTH_MAX_AGE="2")
        with CeleryWorker("htasks", env, tmp_path / "worker.log", pool="prefork",
                          concurrency=2):
            code, line = wait_for(lambda: (r := health(env))[0] == 0 and r, 10, "a healthy worker")
            assert line.endswith(", 2 pool process(es)"), line
            proxy.inject("ReceiveMessage", 5, 403, "ExpiredToken")
            code, line = wait_for(lambda: (r := health(env))[0] == 1 and r, 20,
                                  "failing receives to show")
            assert line.startswith("receives failing for "), line
            assert "ExpiredToken" in line
            wait_for(lambda: health(env)[0] == 0, 40, "the worker to heal by itself")


def test_celery_inspect_ping_says_what_to_use_on_sqs_instead(moto, tmp_path):
    """SQS has no broadcast: ``celery inspect ping`` fails in one line that points to the
    health check and the operator CLI, not only to a missing pidbox queue."""
    env = health_stage(moto.endpoint_url, moto.endpoint_url, tmp_path)
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "htasks", "inspect", "ping",
                           "--timeout", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "remote control" in output and "python -m runtime.health" in output, output[-2000:]
