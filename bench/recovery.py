"""``python -m bench.recovery``: how long a task of a worker killed with SIGKILL waits
before another worker runs it again, stock kombu against the kit's bundled transport,
on fauxqs; prints one row per run.

The scenario (also what ``tests/integration/test_recovery.py`` checks): worker A starts
a task (acks late) that would run for an hour; worker B consumes the same queue; A is
killed with SIGKILL, main process and pool at once, as the OOM killer or a killed
container does, ``kill_after`` seconds into the task. The figure is the time from the
kill to B starting the task. Both workers run the threads pool, two at a time.

- stock: nothing extends visibility, so the task comes back when the visibility timeout
  from its receipt ends. The timeout is the spec's stock rule, ``task_time_limit +
  max_countdown + 60``, with the time limit scaled down to 60 s (so 120 s) to keep the
  run short; the shipped time limit (1500 s) gives 1560 s, and a wait near that.
- kit: the bundled transport at the spec's bundled default, 60 s. Its heartbeat extends
  a held message when half the window is left, so the wait after a kill is between half
  the window and the whole of it, whenever the kill comes and however long the task.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.rules import default_visibility_timeout
from infra.settings import QueueSpec
from local_aws.celery_worker import CeleryWorker
from local_aws.fauxqs import FauxqsServer
from local_aws.fleet import (create_queue, prepare_worker_dir, sqs_client, worker_document,
                             worker_env)

ROOT = Path(__file__).resolve().parent.parent
TASKS_MODULE = "recoverytasks"
TASKS = '''
import os, time
from celery import Celery

app = Celery("recoverytasks")
app.config_from_object("celeryconfig")


def record(event, tag):
    with open(os.environ["KIT_RECOVERY_RUNS"], "a") as runs:
        runs.write(f"{event} {tag} {os.environ['KIT_RECOVERY_WORKER']} {time.time():.3f}\\n")


@app.task
def victim(tag):
    """Runs for an hour on worker a (the one killed); returns at once elsewhere."""
    record("start", tag)
    time.sleep(3600 if os.environ["KIT_RECOVERY_WORKER"] == "a" else 0)
    record("done", tag)


@app.task
def hold(tag, seconds):
    record("start", tag)
    time.sleep(seconds)
    record("done", tag)
'''

SHIPPED_TASK_TIME_LIMIT = QueueSpec.task_time_limit
STOCK_TASK_TIME_LIMIT = 60
"""Scaled down from the shipped 1500 s so a stock run takes two minutes, not 26."""


@dataclass(frozen=True)
class Event:
    kind: str  # "start" or "done"
    tag: str
    worker: str
    at: float  # time.time() in the worker


class RecoveryFleet:
    """One fresh queue (with its DLQ) on an emulator and a worker directory rendered for
    ``transport``; workers are named, and tasks record start and end to one file."""

    def __init__(self, work: Path, endpoint_url: str, *, transport: str, visibility: int,
                 task_time_limit: int) -> None:
        self.work = work
        self.endpoint_url = endpoint_url
        self.visibility = visibility
        name = f"r{uuid.uuid4().hex[:10]}"
        self.sqs = sqs_client(endpoint_url)
        self.queue = create_queue(self.sqs, name, visibility=visibility, wait=20,
                                  task_time_limit=task_time_limit)
        prepare_worker_dir(work, worker_document({name: self.queue}, default_queue=name),
                           transport=transport, tasks_module=TASKS_MODULE, tasks_source=TASKS)
        self.runs = work / "runs.txt"
        self.runs.write_text("")

    def env(self, worker: str) -> dict[str, str]:
        return worker_env(self.work, self.endpoint_url, KIT_RECOVERY_RUNS=str(self.runs),
                          KIT_RECOVERY_WORKER=worker)

    def worker(self, name: str) -> CeleryWorker:
        return CeleryWorker(TASKS_MODULE, self.env(name), self.work / f"worker-{name}.log",
                            pool="threads", concurrency=2)

    def send(self, call: str) -> None:
        """``call`` is a task call such as ``victim.delay('x')``."""
        subprocess.run([sys.executable, "-c", f"from {TASKS_MODULE} import *; {call}"],
                       cwd=self.work, env=self.env("publisher"), check=True, timeout=60,
                       capture_output=True)

    def events(self, kind: str, tag: str) -> list[Event]:
        found = [Event(k, t, w, float(at)) for k, t, w, at in
                 (line.split() for line in self.runs.read_text().splitlines())]
        return [e for e in found if e.kind == kind and e.tag == tag]

    def wait_for(self, kind: str, tag: str, *, worker: str, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(kind, tag):
                if event.worker == worker:
                    return event
            time.sleep(0.1)
        raise TimeoutError(f"no {kind} of {tag!r} on worker {worker} within {timeout:.0f} s; "
                           f"see {self.work}")

    def drained(self, timeout: float = 10) -> bool:
        """Whether the queue holds nothing, visible or in flight, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue["url"], AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
            if not any(int(n) for n in attrs["Attributes"].values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def kill_to_rerun(fleet: RecoveryFleet, survivor: CeleryWorker, *, tag: str,
                  kill_after: float) -> float:
    """Start ``victim(tag)`` on worker a, then ``survivor`` (``fleet.worker("b")``, not yet
    started), and kill a ``kill_after`` seconds into the task; returns the seconds from the
    kill to b starting the task. b is left running: the caller stops it."""
    victim = fleet.worker("a").start()
    try:
        fleet.send(f"victim.delay({tag!r})")
        started = fleet.wait_for("start", tag, worker="a", timeout=60)
        survivor.start()
        time.sleep(max(0.0, started.at + kill_after - time.time()))
    finally:
        killed_at = time.time()
        victim.kill()
    rerun = fleet.wait_for("start", tag, worker="b", timeout=fleet.visibility + 60)
    return rerun.at - killed_at


@dataclass(frozen=True)
class Run:
    transport: str
    task_time_limit: int
    kill_after: float

    @property
    def visibility(self) -> int:
        """The spec's default for the transport (``infra.rules``)."""
        return default_visibility_timeout(transport=self.transport,
                                          task_time_limit=self.task_time_limit, max_countdown=0)

    def measure(self, work: Path) -> float:
        work.mkdir(parents=True, exist_ok=True)
        with FauxqsServer(log_path=work / "fauxqs.log") as server:
            fleet = RecoveryFleet(work, server.endpoint_url, transport=self.transport,
                                  visibility=self.visibility,
                                  task_time_limit=self.task_time_limit)
            survivor = fleet.worker("b")
            try:
                return kill_to_rerun(fleet, survivor, tag="killed", kill_after=self.kill_after)
            finally:
                survivor.stop()


RUNS = (
    Run("stock", STOCK_TASK_TIME_LIMIT, 10),
    Run("bundled", SHIPPED_TASK_TIME_LIMIT, 10),
    Run("bundled", SHIPPED_TASK_TIME_LIMIT, 25),
    Run("bundled", SHIPPED_TASK_TIME_LIMIT, 100),
)
"""Stock at its rule's window (its time limit scaled down); the kit at its default window
with the shipped time limit, killed before its first extension, just before it, and
after three."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transports", default="stock,bundled")
    args = parser.parse_args(argv)
    chosen = args.transports.split(",")
    print(f"{'transport':<10} {'visibility s':>12} {'killed after s':>14} "
          f"{'kill to rerun s':>15}", flush=True)
    for i, run in enumerate(r for r in RUNS if r.transport in chosen):
        seconds = run.measure(ROOT / ".build" / "recovery" / f"{i}-{run.transport}")
        print(f"{run.transport:<10} {run.visibility:>12} {run.kill_after:>14.0f} "
              f"{seconds:>15.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
