"""The chaos run's workers: one slot per worker, each always running an incarnation
(``w2.0``, then ``w2.1`` after a fault, ...). A killed or stopped incarnation is
replaced at once, as ECS or an Auto Scaling group would, so the fleet never has
fewer than its slots (a stopping one finishes its warm shutdown beside its
replacement). An incarnation that exits on its own is a finding: it is recorded,
with the end of its log, and replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from local_aws.celery_worker import CeleryWorker

WARM_STOP_TIMEOUT = 120.0
"""A warm shutdown waits for running tasks (the long ones run 40 s), then the
transport's own shutdown (10 s)."""


@dataclass(frozen=True)
class WorkerSpec:
    slot: str
    pool: str
    concurrency: int


@dataclass
class _Slot:
    spec: WorkerSpec
    incarnation: int = -1
    worker: CeleryWorker | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.slot}.{self.incarnation}"


@dataclass(frozen=True)
class Exit:
    worker: str
    returncode: int | None
    at: float
    log_tail: str


@dataclass
class Fleet:
    """``make(spec, name) -> CeleryWorker`` builds an incarnation's (unstarted) worker."""

    specs: tuple[WorkerSpec, ...]
    make: Callable[[WorkerSpec, str], CeleryWorker]
    log: Callable[[str], None] = print
    unexpected_exits: list[Exit] = field(default_factory=list)
    started: int = 0
    _slots: dict[str, _Slot] = field(default_factory=dict)
    _stopping: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, timeout: float = 120) -> None:
        for spec in self.specs:
            self._slots[spec.slot] = _Slot(spec)
            self._spawn(self._slots[spec.slot])
        for slot in self._slots.values():
            slot.worker.wait_ready(timeout)

    def _spawn(self, slot: _Slot) -> None:
        slot.incarnation += 1
        slot.worker = self.make(slot.spec, slot.name).spawn()
        self.started += 1

    def current(self, slot: str) -> str:
        return self._slots[slot].name

    def kill(self, slot: str) -> str:
        """SIGKILL the slot's incarnation (and its pool); start its replacement."""
        with self._lock:
            s = self._slots[slot]
            name, worker = s.name, s.worker
            worker.kill()
            self._spawn(s)
        return name

    def terminate(self, slot: str) -> str:
        """Warm-stop the slot's incarnation in the background; start its replacement."""
        with self._lock:
            s = self._slots[slot]
            name, worker = s.name, s.worker
            stopping = threading.Thread(target=worker.stop, args=(WARM_STOP_TIMEOUT,),
                                        name=f"stop-{name}", daemon=True)
            stopping.start()
            self._stopping.append(stopping)
            self._spawn(s)
        return name

    def kill_pool_process(self, slot: str, index: int) -> tuple[str, int]:
        """SIGKILL one pool process of the slot's incarnation (Celery replaces it);
        (incarnation, pid), pid 0 if it had none."""
        with self._lock:
            s = self._slots[slot]
            pids = s.worker.pool_pids()
            if not pids:
                return s.name, 0
            pid = pids[index % len(pids)]
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return s.name, 0
            return s.name, pid

    def supervise(self) -> None:
        """Replace any incarnation that exited on its own, recording it."""
        with self._lock:
            for s in self._slots.values():
                if s.worker is not None and not s.worker.running():
                    code = s.worker.stop()  # reaps it and closes its log
                    tail = s.worker.log_text()[-2000:]
                    self.unexpected_exits.append(Exit(s.name, code, time.time(), tail))
                    self.log(f"  ! {s.name} exited on its own ({code}); replacing it")
                    self._spawn(s)

    def running(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots.values() if s.worker and s.worker.running())

    def stop(self) -> None:
        """Warm-stop every incarnation at once and wait for those stopping before."""
        with self._lock:
            workers = [s.worker for s in self._slots.values() if s.worker is not None]
        threads = [threading.Thread(target=w.stop, args=(WARM_STOP_TIMEOUT,)) for w in workers]
        for t in threads:
            t.start()
        for t in [*threads, *self._stopping]:
            t.join()
