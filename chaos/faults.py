"""Applying the schedule's faults to the running stage: the workers (kills, warm
shutdowns), the proxy between them and SQS (resets, stalls, errors, hung polls),
the container-credentials endpoint (an outage), and the queue itself (bad inputs,
sent straight to SQS so that each one certainly lands)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.reconcile import AppliedFault
from chaos.schedule import Fault
from chaos.wire import POISON_MARK
from chaos.workers import Fleet
from local_aws.container_credentials import CredentialsEndpoint
from local_aws.counting_proxy import CountingProxy



@dataclass
class BadInputs:
    """Sends messages no worker can run, remembering their ids by kind."""

    sqs: Any  # a client straight to the emulator
    url: str
    publisher: Callable[[list[str]], None]  # sends unknown-task messages with these ids
    sent: dict[str, list[str]] = field(default_factory=lambda: {"poison_body": [],
                                                                 "unknown_task": []})

    def poison(self, count: int) -> list[str]:
        ids = [f"p-{len(self.sent['poison_body']) + i}" for i in range(count)]
        for n, poison_id in enumerate(ids):
            # Two shapes: not JSON at all, and JSON that is no kombu message.
            body = (f"{POISON_MARK} {poison_id}: not a kombu message" if n % 2 == 0
                    else f'{{"{POISON_MARK}": "{poison_id}", "headers": null}}')
            self.sqs.send_message(QueueUrl=self.url, MessageBody=body)
            self.sent["poison_body"].append(poison_id)
        return ids

    def unknown(self, count: int) -> list[str]:
        ids = [f"u-{len(self.sent['unknown_task']) + i}" for i in range(count)]
        self.publisher(ids)
        self.sent["unknown_task"].extend(ids)
        return ids


def unknown_task_publisher(work: Path, env: Mapping[str, str]) -> Callable[[list[str]], None]:
    """Publishes unknown-task messages from a process with the workers' Celery app."""
    def publish(ids: list[str]) -> None:
        subprocess.run([sys.executable, "-m", "chaos.publish", "unknown", *ids], cwd=work,
                       env=dict(env), check=True, timeout=120, capture_output=True)
    return publish


@dataclass
class Injector:
    fleet: Fleet
    proxy: CountingProxy
    credentials: CredentialsEndpoint
    bad_inputs: BadInputs
    log: Callable[[str], None] = print
    applied: list[AppliedFault] = field(default_factory=list)
    _timers: list[threading.Timer] = field(default_factory=list)

    def apply(self, fault: Fault) -> AppliedFault:
        at = time.time()
        worker, pid, note = "", 0, ""
        kind, target = fault.kind, fault.target
        within = fault.within or None
        if kind == "kill9":
            worker = self.fleet.kill(target)
        elif kind == "sigterm":
            worker = self.fleet.terminate(target)
        elif kind == "kill9_pool_process":
            worker, pid = self.fleet.kill_pool_process(target, fault.count)
            note = f"pid {pid}" if pid else "no pool process to kill"
        elif kind == "connection_reset":
            self.proxy.inject_reset(target, fault.count, within=within)
        elif kind == "stall":
            self.proxy.inject_stall(target, fault.count, fault.seconds, within=within)
        elif kind in ("http_5xx", "throttle"):
            self.proxy.inject(target, fault.count, fault.status, fault.code, within=within)
        elif kind == "long_poll_hang":
            self.proxy.inject_hang(target, fault.count, within=within)
        elif kind == "credentials_outage":
            self.credentials.go_down()
            timer = threading.Timer(fault.seconds, self._credentials_back)
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
        elif kind == "poison_body":
            note = ",".join(self.bad_inputs.poison(fault.count))
        elif kind == "unknown_task":
            note = ",".join(self.bad_inputs.unknown(fault.count))
        else:
            raise ValueError(f"no way to apply fault kind {kind!r}")
        label = " ".join(p for p in (fault.label(), worker and f"-> {worker}", note) if p)
        applied = AppliedFault(at, kind, target, worker=worker, pid=pid, label=label,
                               until=at + max(fault.within, fault.seconds))
        self.applied.append(applied)
        self.log(f"  fault {label}")
        return applied

    def _credentials_back(self) -> None:
        self.credentials.come_back()
        self.log("  fault credentials endpoint is back")

    def run(self, schedule: tuple[Fault, ...], started: float,
            stop: threading.Event) -> None:
        """Apply each fault at its offset from ``started`` (``time.monotonic()``)."""
        for fault in schedule:
            if stop.wait(max(0.0, started + fault.at - time.monotonic())):
                return
            try:
                self.apply(fault)
            except Exception as error:  # a fault that could not be applied is reported
                self.log(f"  ! could not apply {fault.label()}: {error!r}")
        for timer in self._timers:
            timer.join()
