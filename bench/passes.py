"""One benchmark setting (transport x pool x publish mode x request delay) measured
in separate passes, each on a fresh fauxqs: throughput with nothing between worker
and emulator (or, with a request delay, through a proxy that adds it and counts),
run several times; latency at a steady publish rate; requests counted at the wire
through proxies; idle cost. A batch-publishing row measures what batching changes
(publishing rate and requests); a delayed row, throughput at real SQS latency.
The kit's counted and idle passes also run with a result table (moto's DynamoDB,
behind its own counting proxy) and count what the revocation reader
(``runtime.revocation``) adds: its queries of the revocations table."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from local_aws.celery_worker import CeleryWorker
from local_aws.counting_proxy import CountingProxy
from local_aws.fauxqs import FauxqsServer
from local_aws.fleet import (create_queue, create_result_table, create_revocation_table,
                             prepare_worker_dir, sqs_client, worker_document, worker_env)
from local_aws.moto_server import MotoServer
from runtime.celery_settings import BUNDLED_PREFETCH

BENCH_DIR = Path(__file__).resolve().parent
QUEUE = "bench"
PUBLISHER = '''
import contextlib, sys, time
from benchtasks import app, noop
from runtime.publishing import batch_publish
count, pace, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
with batch_publish(app) if mode == "batch" else contextlib.nullcontext():
    for _ in range(count):
        noop.delay(time.time())
        if pace:
            time.sleep(pace)
'''
SINGLE, BATCH = "single", "batch"


KOMBU_DEFAULTS = "kombu defaults"
"""Stock kombu's own polling: 10 s long polls and a 1 s polling interval."""
RENDERED = "rendered"
"""The rendered configuration's polling: 20 s long polls, no polling interval."""
VARIANTS = {"stock": ("stock", KOMBU_DEFAULTS), "stock-tuned": ("stock", RENDERED),
            "kit": ("kit", RENDERED)}
"""What ``--transports`` names: stock as kombu ships it, stock with the kit's polling
options, and the bundled transport."""


@dataclass
class Setting:
    transport: str  # "stock" or "kit"
    pool: str
    concurrency: int
    polling: str = RENDERED
    publish_mode: str = SINGLE
    request_delay_ms: int = 0
    prefetch_multiplier: int = BUNDLED_PREFETCH
    """Both transports get the same window (``concurrency x prefetch_multiplier``)."""

    @classmethod
    def of(cls, variant: str, pool: str, concurrency: int, *, publish_mode: str = SINGLE,
           request_delay_ms: int = 0, prefetch_multiplier: int = BUNDLED_PREFETCH) -> Setting:
        transport, polling = VARIANTS[variant]
        return cls(transport, pool, concurrency, polling, publish_mode, request_delay_ms,
                   prefetch_multiplier)

    @property
    def name(self) -> str:
        tuned = self.transport == "stock" and self.polling == RENDERED
        extra = (f", {self.publish_mode} publish" if self.publish_mode != SINGLE else "") + \
            (f", +{self.request_delay_ms} ms" if self.request_delay_ms else "")
        return f"{self.transport}{'-tuned' if tuned else ''}/{self.pool}{extra}"


@dataclass
class Figures:
    setting: Setting
    tasks: int = 0
    tasks_per_s_runs: list[float] = field(default_factory=list)
    publish_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    rss_mb: float | None = None
    publish_requests: dict[str, int] = field(default_factory=dict)
    consume_requests: dict[str, int] = field(default_factory=dict)
    counted_tasks: int = 0
    idle_requests_per_queue_hour: float | None = None
    revocation_reads: int | None = None
    """The revocation reader's queries while the counted tasks ran (kit rows)."""
    idle_revocation_reads_per_hour: float | None = None

    def as_result(self) -> dict:
        by_action: dict[str, float] = {}
        for side in (self.publish_requests, self.consume_requests):
            for action, n in side.items():
                by_action[action] = by_action.get(action, 0) + n / max(self.counted_tasks, 1)
        runs = self.tasks_per_s_runs
        return {
            "transport": self.setting.transport, "polling": self.setting.polling,
            "pool": self.setting.pool, "publish_mode": self.setting.publish_mode,
            "request_delay_ms": self.setting.request_delay_ms,
            "concurrency": self.setting.concurrency,
            "prefetch_multiplier": self.setting.prefetch_multiplier, "tasks": self.tasks,
            "tasks_per_s": round(statistics.median(runs), 1) if runs else None,
            "tasks_per_s_runs": [round(r, 1) for r in runs],
            "requests_per_task": round(sum(by_action.values()), 3),
            "requests_by_action": {k: round(v, 3) for k, v in sorted(by_action.items())},
            "publish_requests_per_task": round(
                sum(self.publish_requests.values()) / max(self.counted_tasks, 1), 3),
            "consume_requests_per_task": round(
                sum(self.consume_requests.values()) / max(self.counted_tasks, 1), 3),
            "latency_p50_ms": _rounded(self.latency_p50_ms, 1),
            "latency_p95_ms": _rounded(self.latency_p95_ms, 1),
            "rss_mb": _rounded(self.rss_mb, 1),
            "idle_requests_per_queue_hour": _rounded(self.idle_requests_per_queue_hour, 0),
            "publish_per_s": _rounded(self.publish_per_s, 1),
            "revocation_reads_per_task": None if self.revocation_reads is None else round(
                self.revocation_reads / max(self.counted_tasks, 1), 4),
            "revocation_reads_per_worker_hour": _rounded(self.idle_revocation_reads_per_hour, 0),
        }


RESULT_TABLE = "bench-results"
REVOCATION_TABLE = "bench-revocations"


class Stage:
    """A fresh fauxqs with the bench queue, and a worker directory rendered for it;
    with ``result_table``, also a moto with the result table, reached through
    :attr:`table_proxy` (which counts the workers' DynamoDB requests)."""

    def __init__(self, work: Path, setting: Setting, *, result_table: bool = False) -> None:
        self.work = work
        self.setting = setting
        self.server = FauxqsServer(log_path=work / "fauxqs.log")
        self.record = work / "record.txt"
        self.results = MotoServer(log_path=work / "moto.log") if result_table else None
        self.table_proxy: CountingProxy | None = None

    def __enter__(self) -> Stage:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.server.start()
        queue = create_queue(sqs_client(self.server.endpoint_url), QUEUE, visibility=1800,
                             wait=20, max_receive_count=5, task_time_limit=600)
        if self.results is not None:
            self._start_result_table(self.results)
        prepare_worker_dir(self.work, worker_document(
                               {QUEUE: queue}, default_queue=QUEUE,
                               result_table=RESULT_TABLE if self.results else None,
                               revocation_table=REVOCATION_TABLE if self.results else None),
                           transport="bundled" if self.setting.transport == "kit" else "stock",
                           tasks_module="benchtasks",
                           tasks_source=(BENCH_DIR / "tasks.py").read_text())
        # Same Celery app for both transports: stock gets the kit's prefetch window
        # (its rendered default of 1 is safer for it, and slower).
        with open(self.work / "celeryconfig.py", "a") as config:
            config.write(f"worker_prefetch_multiplier = {self.setting.prefetch_multiplier}\n")
            if self.setting.polling == KOMBU_DEFAULTS:
                config.write("broker_transport_options.pop('wait_time_seconds')\n"
                             "broker_transport_options.pop('polling_interval')\n")
        self.record.touch()
        return self

    def _start_result_table(self, results: MotoServer) -> None:
        results.start()
        create_result_table(results.endpoint_url, RESULT_TABLE)
        create_revocation_table(results.endpoint_url, REVOCATION_TABLE)
        self.table_proxy = CountingProxy(results.endpoint_url).start()

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        if self.table_proxy is not None:
            self.table_proxy.stop()
        if self.results is not None:
            self.results.stop()

    def env(self, endpoint_url: str) -> dict[str, str]:
        # SQS at endpoint_url, DynamoDB (botocore's per-service variable) at the table's proxy.
        tables = ({"AWS_ENDPOINT_URL_DYNAMODB": self.table_proxy.endpoint_url}
                  if self.table_proxy else {})
        return worker_env(self.work, endpoint_url, KIT_BENCH_RECORD=str(self.record), **tables)

    def revocation_reads(self) -> int:
        """Query at the tables: only the revocation reader queries (the tasks store no
        result)."""
        assert self.table_proxy is not None
        return self.table_proxy.counts().get("Query", 0)

    def publish(self, count: int, endpoint_url: str, pace: float = 0.0) -> float:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", PUBLISHER, str(count), str(pace),
                        self.setting.publish_mode],
                       cwd=self.work, env=self.env(endpoint_url), check=True, timeout=900)
        return time.monotonic() - started

    @contextmanager
    def worker(self, endpoint_url: str, name: str) -> Iterator[CeleryWorker]:
        w = CeleryWorker("benchtasks", self.env(endpoint_url), self.work / f"{name}.log",
                         pool=self.setting.pool, concurrency=self.setting.concurrency)
        with w:
            yield w

    def records(self) -> list[tuple[float, float]]:
        return [tuple(map(float, line.split())) for line in
                self.record.read_text().splitlines() if line.strip()]

    def wait_for_records(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.record.read_text().splitlines()) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.records())}/{count} tasks ran within {timeout:.0f} s")


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _rounded(value: float | None, digits: int) -> float | int | None:
    return None if value is None else round(value, digits or None)


def measure(settings: list[Setting], work: Path, *, tasks: int, counted_tasks: int,
            latency_tasks: int, idle_seconds: float, runs: int, log=print) -> list[Figures]:
    """Every pass of each setting, the throughput runs interleaved: run 1 of every
    setting, then run 2 of every setting, and so on, so that the machine's drift
    (this VM's throughput moves by a quarter between hours) reaches every setting
    alike and their medians compare. Then, setting by setting: latency, requests and
    idle for a base row; what batching changes for a batch-publishing row (publishing
    rate, requests); nothing more for a delayed row (its proxy counted its requests)."""
    all_figures = [Figures(s, tasks=tasks, counted_tasks=counted_tasks) for s in settings]
    for run in range(runs):
        for i, figures in enumerate(all_figures):
            setting = figures.setting
            if setting.publish_mode == SINGLE or setting.request_delay_ms > 0:
                throughput(setting, work / str(i) / f"throughput-{run}", figures, log)
    for i, figures in enumerate(all_figures):
        if figures.setting.request_delay_ms == 0:
            _counted_passes(figures, work / str(i), latency_tasks=latency_tasks,
                            idle_seconds=idle_seconds, log=log)
    return all_figures


def _counted_passes(figures: Figures, work: Path, *, latency_tasks: int, idle_seconds: float,
                    log) -> None:
    setting = figures.setting
    if setting.publish_mode == BATCH:
        with Stage(work / "publish", setting) as stage:
            figures.publish_per_s = figures.tasks / stage.publish(figures.tasks,
                                                                  stage.server.endpoint_url)
        log(f"  {setting.name}: publishing {figures.publish_per_s:.1f} tasks/s")
    else:
        latency(setting, work / "latency", figures, latency_tasks, log)
    requests(setting, work / "requests", figures, log)
    if setting.publish_mode == SINGLE:
        idle(setting, work / "idle", figures, idle_seconds, log)


def throughput(setting: Setting, work: Path, figures: Figures, log) -> None:
    """Consuming ``figures.tasks`` published beforehand, from the first task's start to the
    last's by the tasks' own clocks (a fast worker starts tasks before it says it is
    ready); directly against the emulator, or through a proxy adding the request delay."""
    with Stage(work, setting) as stage, \
            CountingProxy(stage.server.endpoint_url,
                          delay=setting.request_delay_ms / 1000) as proxy:
        published_in = stage.publish(figures.tasks, stage.server.endpoint_url)
        if figures.publish_per_s is None:
            figures.publish_per_s = figures.tasks / published_in
        endpoint = proxy.endpoint_url if setting.request_delay_ms else stage.server.endpoint_url
        with stage.worker(endpoint, "worker") as w:
            stage.wait_for_records(figures.tasks, timeout=1200)
            figures.rss_mb = tree_rss_mb(w._process.pid)
            time.sleep(1.0)  # let the last acks leave
        starts = sorted(start for _sent, start in stage.records())
        figures.tasks_per_s_runs.append((len(starts) - 1) / (starts[-1] - starts[0]))
        if setting.request_delay_ms:
            figures.counted_tasks = figures.tasks
            figures.consume_requests = proxy.counts()
            figures.publish_requests = {"SendMessage": figures.tasks}  # published directly
    log(f"  {setting.name}: {figures.tasks_per_s_runs[-1]:.1f} tasks/s consuming "
        f"{figures.tasks}")


def latency(setting: Setting, work: Path, figures: Figures, latency_tasks: int, log) -> None:
    """A running worker and a steady publish rate (50 a second): from send to start."""
    with Stage(work, setting) as stage:
        with stage.worker(stage.server.endpoint_url, "worker"):
            stage.publish(latency_tasks, stage.server.endpoint_url, pace=0.02)
            stage.wait_for_records(latency_tasks, timeout=300)
        latencies = sorted((start - sent) * 1000 for sent, start in stage.records())
    figures.latency_p50_ms = statistics.median(latencies)
    figures.latency_p95_ms = latencies[int(0.95 * (len(latencies) - 1))]
    log(f"  {setting.name}: latency p50 {figures.latency_p50_ms:.1f} ms, "
        f"p95 {figures.latency_p95_ms:.1f} ms")


def _with_result_table(setting: Setting) -> bool:
    return setting.transport == "kit"


def requests(setting: Setting, work: Path, figures: Figures, log) -> None:
    """Requests at the wire, publisher and worker each through a counting proxy (and,
    for the kit, the result table's reads through its own)."""
    with Stage(work, setting, result_table=_with_result_table(setting)) as stage, \
            CountingProxy(stage.server.endpoint_url) as publisher, \
            CountingProxy(stage.server.endpoint_url) as consumer:
        stage.publish(figures.counted_tasks, publisher.endpoint_url)
        with stage.worker(consumer.endpoint_url, "worker"):
            stage.wait_for_records(figures.counted_tasks, timeout=600)
            time.sleep(1.0)  # let the last acks leave
        figures.publish_requests = publisher.counts()
        figures.consume_requests = consumer.counts()
        if stage.table_proxy is not None:
            figures.revocation_reads = stage.revocation_reads()
    log(f"  {setting.name}: requests publish {figures.publish_requests} "
        f"consume {figures.consume_requests}, revocation reads {figures.revocation_reads}")


def idle(setting: Setting, work: Path, figures: Figures, idle_seconds: float, log) -> None:
    """Receives an idle worker makes, per queue and hour (and, for the kit, its reads of
    the revocations, per worker and hour)."""
    with Stage(work, setting, result_table=_with_result_table(setting)) as stage, \
            CountingProxy(stage.server.endpoint_url) as proxy:
        with stage.worker(proxy.endpoint_url, "worker"):
            proxy.reset()  # start-up polls are not idle cost
            if stage.table_proxy is not None:
                stage.table_proxy.reset()
            time.sleep(idle_seconds)
            receives = proxy.counts().get("ReceiveMessage", 0)
            if stage.table_proxy is not None:
                figures.idle_revocation_reads_per_hour = \
                    stage.revocation_reads() * 3600 / idle_seconds
    figures.idle_requests_per_queue_hour = receives * 3600 / idle_seconds
    log(f"  {setting.name}: idle {figures.idle_requests_per_queue_hour:.0f} receives per "
        f"queue-hour, revocation reads per worker-hour {figures.idle_revocation_reads_per_hour}")
