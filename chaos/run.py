"""One chaos run: a fresh fauxqs, a proxy between it and everything else that
injects network faults and refuses expired tokens, a container-credentials
endpoint serving short-lived tokens, a fleet of real ``celery worker`` processes
authenticating through it, a paced publisher, and the seeded schedule applied
while they work; then the drain and the reconciliation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.faults import BadInputs, Injector, unknown_task_publisher
from chaos.reconcile import AppliedFault, DeadLetter, Execution, Reconciliation, reconcile
from chaos.schedule import Fault, ScheduleConfig, digest, make_schedule, slot_names
from chaos.workers import Exit, Fleet, WorkerSpec
from chaos.wire import PublishRecordingProxy, message_id
from chaos.workload import PlannedTask, WorkloadConfig, plan_tasks
from local_aws.celery_worker import CeleryWorker, role_environment
from local_aws.container_credentials import CredentialsEndpoint, MintedCredentials
from local_aws.fauxqs import FauxqsServer
from local_aws.fleet import create_queue, prepare_worker_dir, sqs_client, worker_document
from local_aws.fleet import worker_env as emulator_env
from local_aws.moto_server import REGION

CHAOS_DIR = Path(__file__).resolve().parent
QUEUE = "chaos"


@dataclass(frozen=True)
class ChaosConfig:
    tasks: int = 10_000
    seed: int = 1
    workers: int = 3
    """Worker slots; pools alternate prefork, threads, prefork, ..."""
    concurrency: int = 2
    window: float = 150.0
    """Seconds within which faults start."""
    publish_seconds: float = 100.0
    """Publishing is paced to take this long, so faults meet publishing too."""
    visibility_timeout: int = 30
    """The kit's minimum with the bundled transport (``infra.rules``: below it one slow
    heartbeat call can use up what is left of the window), and short enough that work
    held by a killed worker comes back within the run."""
    wait_time_seconds: int = 20
    max_receive_count: int = 5
    """The kit's default redrive."""
    long_task_seconds: float = 40.0
    """Longer than the visibility timeout, on purpose: the heartbeat must cover them."""
    task_time_limit: int = 90
    token_lifetime: float = 20.0
    outage_seconds: float = 45.0
    """The credentials outage: longer than a token lives."""
    drain_timeout: float = 400.0
    quiet_seconds: float = 30.0
    """The drain ends when every sent task is done and the queue is empty, or when the
    queue has been empty this long."""

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple("prefork" if i % 2 == 0 else "threads" for i in range(self.workers))

    def schedule_config(self) -> ScheduleConfig:
        return ScheduleConfig(window=self.window, pools=self.pools,
                              outage_seconds=self.outage_seconds)

    def workload_config(self) -> WorkloadConfig:
        return WorkloadConfig(tasks=self.tasks, long_seconds=self.long_task_seconds)


@dataclass
class Outcome:
    config: ChaosConfig
    schedule: tuple[Fault, ...]
    applied: list[AppliedFault]
    reconciliation: Reconciliation
    sent_ids: set[str]
    publish_failed: dict[str, str]
    """Task id -> why its last refused publish raised (it may have been sent after)."""
    dead_letters: list[DeadLetter]
    requests: dict[str, int]
    faulted_requests: dict[str, int]
    tokens_minted: int
    credential_fetches_refused: int
    unexpected_exits: list[Exit]
    worker_processes_started: int
    drain: str
    wall_s: float
    log_findings: dict[str, int] = field(default_factory=dict)


class ExecutionLog:
    """The tasks' append-only log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Execution] = []
        self.done: set[str] = set()
        self._offset = 0

    def read(self) -> None:
        with open(self.path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[:data.rfind(b"\n") + 1]  # a line being written waits for the next read
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            event, task_id, worker, pid, at = line.split()
            self.records.append(Execution(event, task_id, worker, int(pid), float(at)))
            if event == "done":
                self.done.add(task_id)


def read_ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def queue_depth(sqs: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed), as SQS reports them."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return (int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            int(attrs["ApproximateNumberOfMessagesDelayed"]))


def read_dead_letters(sqs: Any, url: str) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    empty = 0
    while empty < 2:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=600,
                                       MessageAttributeNames=["All"]).get("Messages", [])
        empty = 0 if messages else empty + 1
        for m in messages:
            reason = (m.get("MessageAttributes") or {}).get("kit_reason", {}).get(
                "StringValue", "redrive policy (maxReceiveCount)")
            letters.append(DeadLetter(message_id(m["Body"]), reason))
    return letters


_LEVEL = re.compile(r"\[[^\]]*: (ERROR|CRITICAL|WARNING)/[^\]]*\] (.*)")


def log_findings(paths: list[Path], top: int = 25) -> dict[str, int]:
    """Warnings and errors the workers logged, counted by their text with numbers,
    ids and addresses blurred, most frequent first."""
    found: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            match = _LEVEL.search(line)
            if match:
                text = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "N", match.group(2))[:160]
                found[f"{match.group(1)} {text}"] += 1
    return dict(found.most_common(top))


def run(config: ChaosConfig, work: Path, log: Callable[[str], None] = print) -> Outcome:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    plan = plan_tasks(config.seed, config.workload_config())
    schedule = make_schedule(config.seed, config.schedule_config())
    log(f"seed {config.seed}: {len(plan)} tasks ({_kinds(plan)}), {len(schedule)} faults, "
        f"schedule {digest(schedule)}")
    for fault in schedule:
        log(f"  planned {fault.label()}")
    plan_path = work / "plan.jsonl"
    plan_path.write_text("".join(json.dumps(asdict(t)) + "\n" for t in plan))
    sent_path, failed_path, exec_path = work / "sent.txt", work / "failed.txt", \
        work / "executions.log"
    exec_path.touch()

    with FauxqsServer(log_path=work / "fauxqs.log") as server:
        direct = sqs_client(server.endpoint_url)
        queue = create_queue(direct, QUEUE, visibility=config.visibility_timeout,
                             wait=config.wait_time_seconds,
                             max_receive_count=config.max_receive_count,
                             task_time_limit=config.task_time_limit)
        prepare_worker_dir(work, worker_document({QUEUE: queue}, default_queue=QUEUE),
                           transport="bundled", tasks_module="chaostasks",
                           tasks_source=(CHAOS_DIR / "tasks.py").read_text())
        minted = MintedCredentials(config.token_lifetime)
        with CredentialsEndpoint(minted) as credentials, \
                PublishRecordingProxy(server.endpoint_url, minted.expired) as proxy:
            # Workers: no keys, only the credentials endpoint (as on ECS), through the proxy.
            workers_env = role_environment(work, {
                "AWS_ENDPOINT_URL": proxy.endpoint_url, "AWS_DEFAULT_REGION": REGION,
                **credentials.environment(), "KIT_CHAOS_LOG": str(exec_path)})

            def make(spec: WorkerSpec, name: str) -> CeleryWorker:
                return CeleryWorker("chaostasks", {**workers_env, "KIT_CHAOS_WORKER": name},
                                    work / f"{name}.log", pool=spec.pool,
                                    concurrency=spec.concurrency, hostname=f"{name}@%h")

            specs = tuple(WorkerSpec(slot, pool, config.concurrency)
                          for slot, pool in zip(slot_names(config.pools), config.pools))
            fleet = Fleet(specs, make, log)
            bad = BadInputs(direct, queue["url"], unknown_task_publisher(
                work, emulator_env(work, server.endpoint_url)))
            injector = Injector(fleet, proxy, credentials, bad, log)
            log(f"starting {len(specs)} workers: " +
                ", ".join(f"{s.slot} {s.pool} -c {s.concurrency}" for s in specs))
            fleet.start()
            progress = ExecutionLog(exec_path)
            stop = threading.Event()
            began = time.monotonic()
            with open(work / "publish.log", "wb") as publish_log:
                # The publisher: static emulator keys (its role is not under test),
                # through the proxy (its faults are).
                publisher = subprocess.Popen(
                    [sys.executable, "-m", "chaos.publish", "tasks", str(plan_path),
                     str(sent_path), str(failed_path),
                     "--rate", str(config.tasks / config.publish_seconds)],
                    cwd=work, env=emulator_env(work, proxy.endpoint_url),
                    stdout=publish_log, stderr=subprocess.STDOUT)
                scheduler = threading.Thread(target=injector.run, args=(schedule, began, stop),
                                             name="chaos-scheduler", daemon=True)
                scheduler.start()
                try:
                    watch = _Watch(fleet, progress, direct, queue["url"], sent_path, began, log,
                                   len(schedule), injector)
                    watch.until(lambda: not scheduler.is_alive() and publisher.poll() is not None)
                    log(f"publisher exited {publisher.returncode}; draining")
                    drain = watch.drain(config.drain_timeout, config.quiet_seconds)
                    log(f"drain: {drain}")
                finally:
                    stop.set()
                    if publisher.poll() is None:
                        publisher.kill()
                    credentials.come_back()
                    fleet.stop()
            wall = time.monotonic() - began
            progress.read()
            requests, faulted, copies = proxy.counts(), proxy.faulted(), proxy.copies()
        letters = read_dead_letters(direct, queue["dead_letter_queue"]["url"])

    sent = read_ids(sent_path)
    failed: dict[str, str] = {}  # task id -> why its last refused publish raised
    for line in failed_path.read_text().splitlines() if failed_path.exists() else []:
        task_id, _attempt, why = line.split(" ", 2)
        failed[task_id] = why
    result = reconcile(sent, progress.records, injector.applied, letters, bad.sent, copies,
                       lookback=config.visibility_timeout)
    return Outcome(config, schedule, injector.applied, result, set(sent), failed, letters,
                   requests, faulted, minted.minted, credentials.refused,
                   fleet.unexpected_exits, fleet.started, drain, wall,
                   log_findings(sorted(work.glob("w*.log"))))


def _kinds(plan: tuple[PlannedTask, ...]) -> str:
    kinds = Counter(t.kind for t in plan)
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))


class _Watch:
    """Supervises the fleet and prints progress while waiting."""

    def __init__(self, fleet: Fleet, progress: ExecutionLog, sqs: Any, url: str,
                 sent_path: Path, began: float, log: Callable[[str], None],
                 faults: int, injector: Injector) -> None:
        self.fleet, self.progress, self.sqs, self.url = fleet, progress, sqs, url
        self.sent_path, self.began, self.log = sent_path, began, log
        self.faults, self.injector = faults, injector
        self._said = 0.0

    def tick(self) -> tuple[list[str], tuple[int, int, int]]:
        self.fleet.supervise()
        self.progress.read()
        sent = read_ids(self.sent_path)
        depth = queue_depth(self.sqs, self.url)
        elapsed = time.monotonic() - self.began
        if elapsed - self._said >= 10:
            self._said = elapsed
            done = sum(1 for t in sent if t in self.progress.done)
            self.log(f"{elapsed:5.0f} s  sent {len(sent):>6}  done {done:>6}  "
                     f"executions {sum(r.event == 'start' for r in self.progress.records):>6}  "
                     f"workers {self.fleet.running()}  faults "
                     f"{len(self.injector.applied)}/{self.faults}  queue visible/in flight/"
                     f"delayed {depth[0]}/{depth[1]}/{depth[2]}")
        return sent, depth

    def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.tick()
            time.sleep(1.0)

    def drain(self, timeout: float, quiet: float) -> str:
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            sent, depth = self.tick()
            now = time.monotonic()
            empty = sum(depth) == 0
            empty_since = (empty_since or now) if empty else None
            if empty and all(t in self.progress.done for t in sent):
                return f"every sent task done and the queue empty after {now - self.began:.0f} s"
            if empty_since is not None and now - empty_since >= quiet:
                return f"queue empty for {quiet:.0f} s, tasks still missing"
            time.sleep(1.0)
        return f"timed out after {timeout:.0f} s"
