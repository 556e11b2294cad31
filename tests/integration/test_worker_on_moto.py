"""The runtime on moto, stock and bundled transports: a real worker configured only by the
emitted document, no CDK involved (that is the e2e layer)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from local_aws.celery_worker import CeleryWorker
from local_aws.fleet import create_queue, create_result_table, worker_document
from local_aws.stage import PROJECT_ROOT
from runtime.render import main as render_main
from tests.integration.fleet import sqs_client, worker_env

pytestmark = pytest.mark.integration

TASKS = '''
from celery import Celery
app = Celery("itasks")
app.config_from_object("{config}")

@app.task
def mul(x, y):
    return x * y
'''


@pytest.fixture(scope="module")
def deployed(moto, tmp_path_factory):
    """Two queues (standard and FIFO) and a result table, and their document."""
    work = tmp_path_factory.mktemp("worker")
    sqs = sqs_client(moto.endpoint_url)
    queues = {name: create_queue(sqs, name, visibility=120, wait=1)
              for name in ("work", "jobs.fifo")}
    document = worker_document(queues, default_queue="work",
                               result_table=create_result_table(moto.endpoint_url, "results"))
    (work / "worker-config.json").write_text(json.dumps(document))
    (work / "itasks.py").write_text(TASKS.format(config="celeryconfig"))
    return work, document, worker_env(work, moto.endpoint_url)


def run_client(work, env, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("transport", ["stock", "bundled"])
def test_rendered_config_drives_a_real_worker_on_both_queue_types(deployed, transport):
    work, _document, env = deployed
    assert render_main(["--config", str(work / "worker-config.json"),
                        "--out", str(work / "celeryconfig.py"), "--transport", transport]) == 0
    with CeleryWorker("itasks", env, work / "worker.log", pool="threads", concurrency=2) as w:
        client = run_client(work, env, (
            "from itasks import mul\n"
            "a = mul.delay(6, 7)\n"
            "b = mul.apply_async((3, 5), queue='jobs.fifo', MessageGroupId='g1')\n"
            "print(a.get(timeout=60), b.get(timeout=60))\n"))
        assert client.returncode == 0, client.stderr[-2000:]
        assert client.stdout.split() == ["42", "15"]
        assert "kit-worker@" in w.log_text()


def test_import_time_config_fails_at_worker_start_naming_file_and_field(deployed):
    work, document, env = deployed
    broken = json.loads(json.dumps(document))
    del broken["queues"]["jobs.fifo"]["url"]
    path = work / "broken-config.json"
    path.write_text(json.dumps(broken))
    (work / "itasks_import.py").write_text(TASKS.format(config="runtime.celeryconfig"))
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "itasks_import", "worker", "--pool=solo"],
        cwd=work, env={**env, "CELERY_SQS_KIT_CONFIG": str(path)}, capture_output=True,
        text=True, timeout=60, check=False)
    assert worker.returncode != 0
    assert worker.stderr.strip().splitlines()[-1] == \
        f"celery-sqs-kit: {path}: queues.jobs.fifo.url: is missing"
    assert "Traceback" not in worker.stderr


def test_import_time_config_loads_from_the_environment(deployed):
    work, document, env = deployed
    result = subprocess.run(
        [sys.executable, "-c", "import runtime.celeryconfig as c; print(c.broker_transport, "
         "sorted(c.broker_transport_options['predefined_queues']))"],
        cwd=PROJECT_ROOT, env={**env, "CELERY_SQS_KIT_CONFIG_JSON": json.dumps(document)},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "runtime.transport:Transport ['jobs.fifo', 'work']"
