"""The chaos run's task: it records each execution's start and end in an append-only
log, so the run can tell a task that never ran from one that ran twice or was killed
half-way. Copied into the worker directory as ``chaostasks``."""

import os
import time

from celery import Celery

app = Celery("chaostasks")
app.config_from_object("celeryconfig")
_LOG = os.environ.get("KIT_CHAOS_LOG", os.devnull)
_WORKER = os.environ.get("KIT_CHAOS_WORKER", "?")


def _record(event: str, task_id: str) -> None:
    line = f"{event} {task_id} {_WORKER} {os.getpid()} {time.time():.6f}\n".encode()
    # One write to a file opened with O_APPEND: whole lines, whatever process writes,
    # and what a SIGKILL interrupts is the task, never half a line.
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task(bind=True, ignore_result=True)
def work(self, seconds: float) -> None:
    _record("start", self.request.id)
    time.sleep(seconds)
    _record("done", self.request.id)
