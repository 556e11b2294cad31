"""The health check's verdicts (runtime.health) and the bound the worker records
(runtime.liveness), without a worker: state files written by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runtime import liveness
from runtime.errors import ConfigError
from runtime.health import HEALTH_FILE_ENV, WorkerState, check, write_state


@pytest.fixture
def state_file(tmp_path):
    return tmp_path / "health.json"


def test_fresh_state_of_a_live_process_is_healthy(state_file):
    write_state(state_file, WorkerState(pid=os.getpid(), refreshed=100.0, max_age=50))
    healthy, line = check(state_file, now=130.0)
    assert healthy
    assert line == (f"healthy: pid {os.getpid()}, consumer loop ran 30.0 s ago, "
                    "0 pool process(es)")


def test_missing_state_file_is_unhealthy_and_says_so(state_file):
    healthy, line = check(state_file, now=0.0)
    assert not healthy
    assert line.startswith(f"state file missing: {state_file}")


@pytest.mark.parametrize("text", ["{", "[]", '{"pid": 1}', '{"pid": "x", "refreshed": 1, '
                                  '"max_age": 1}'])
def test_unreadable_state_file_is_unhealthy(state_file, text):
    state_file.write_text(text)
    healthy, line = check(state_file, now=0.0)
    assert not healthy
    assert line.startswith(f"state file unreadable: {state_file}: ")


def test_exited_worker_is_not_running(state_file):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_state(state_file, WorkerState(pid=int(gone.stdout), refreshed=100.0, max_age=50))
    assert check(state_file, now=100.0) == (
        False, f"worker process not running: pid {int(gone.stdout)} (from {state_file})")


def test_killed_but_unreaped_worker_is_not_running(state_file):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        write_state(state_file, WorkerState(pid=zombie.pid, refreshed=100.0, max_age=50))
        healthy, line = check(state_file, now=100.0)
    finally:
        zombie.wait()
    assert not healthy
    assert line.startswith("worker process not running")


def test_timestamp_older_than_the_bound_is_a_stale_consumer_loop(state_file):
    write_state(state_file, WorkerState(pid=os.getpid(), refreshed=100.0, max_age=50))
    assert check(state_file, now=150.0)[0]
    assert check(state_file, now=151.0) == (
        False, f"consumer loop stale: last ran 51 s ago, bound 50 s (pid {os.getpid()})")


def test_a_dead_pool_process_is_unhealthy(state_file):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    write_state(state_file, WorkerState(pid=os.getpid(), refreshed=100.0, max_age=50,
                                        pool_pids=(os.getpid(), child.pid)))
    healthy, line = check(state_file, now=101.0)
    assert not healthy
    assert line == f"pool process not running: pid {child.pid} (worker pid {os.getpid()})"


def test_receives_failing_for_longer_than_the_bound_are_unhealthy_and_named(state_file):
    error = "ReceiveMessage on queue 'celery' failed: ExpiredToken; credentials expired"
    write_state(state_file, WorkerState(pid=os.getpid(), refreshed=100.0, max_age=50,
                                        receive_failing_since=40.0, last_receive_error=error))
    assert check(state_file, now=89.0)[0]  # 49 s of failures: within the bound
    healthy, line = check(state_file, now=100.0)
    assert not healthy
    assert line == f"receives failing for 60 s, bound 50 s: {error}"


def test_command_prints_one_line_and_exits_1_when_unhealthy(state_file):
    done = subprocess.run([sys.executable, "-m", "runtime.health"], capture_output=True,
                          text=True, env={**os.environ, HEALTH_FILE_ENV: str(state_file)},
                          check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("state file missing")


def test_write_state_leaves_only_the_state_file(state_file):
    write_state(state_file, WorkerState(pid=7, refreshed=1.5, max_age=3))
    write_state(state_file, WorkerState(pid=7, refreshed=2.5, max_age=3))
    assert [p.name for p in state_file.parent.iterdir()] == [state_file.name]
    assert json.loads(state_file.read_text()) == {
        "pid": 7, "refreshed": 2.5, "max_age": 3, "pool_pids": [],
        "receive_failing_since": None, "last_receive_error": ""}


def test_bound_is_derived_from_the_long_poll_wait(monkeypatch):
    monkeypatch.delenv(liveness.MAX_AGE_ENV, raising=False)
    assert liveness.max_age(20) == 50
    assert liveness.max_age(0) == 10


def test_bound_can_be_set_in_the_environment(monkeypatch):
    monkeypatch.setenv(liveness.MAX_AGE_ENV, "2.5")
    assert liveness.max_age(20) == 2.5


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_a_bad_bound_stops_the_worker_at_configuration(monkeypatch, value):
    monkeypatch.setenv(liveness.MAX_AGE_ENV, value)
    with pytest.raises(ConfigError, match=r"CELERY_SQS_KIT_HEALTH_MAX_AGE: must be a number "
                                          r"of seconds > 0, got"):
        liveness.install()
