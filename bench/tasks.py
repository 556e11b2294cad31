"""The benchmark's task: a no-op that records when it started (and when it was sent)."""

import os
import time

from celery import Celery

app = Celery("benchtasks")
app.config_from_object("celeryconfig")
_RECORD = os.environ.get("KIT_BENCH_RECORD", os.devnull)


@app.task(ignore_result=True)
def noop(sent_at: float) -> None:
    started = time.time()
    with open(_RECORD, "a") as record:  # one short O_APPEND write: atomic across processes
        record.write(f"{sent_at:.6f} {started:.6f}\n")
