"""The worker image, built from the repository's Dockerfile on the project's own container
engine and run for real: as uid 10001 with neither aws_cdk nor pycurl, running tasks
published from the host through moto, healthy by its HEALTHCHECK, warm-stopped by
``docker stop``, and its running task rerun by another container after ``docker kill``. Skips, with the reason, only where no engine can be started."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from local_aws.fleet import (EMULATOR_KEYS, create_queue, create_result_table, sqs_client,
                             worker_document, worker_env)
from local_aws.moto_server import REGION
from local_aws.worker_image import WorkerImage, build_image
from runtime.render import main as render_main
from tests.integration.fleet import publish, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(engine) -> WorkerImage:
    engine.ensure_base_image()
    return build_image(engine)


@pytest.fixture(scope="module")
def fleet(moto, tmp_path_factory):
    return image_fleet(moto, tmp_path_factory.mktemp("image-fleet"), visibility=60)


def image_fleet(moto, work, *, visibility: int):
    """A queue and a result table on moto, the document the container is given, and a
    host directory whose ``celeryconfig.py`` lets ``demo.tasks`` publish to that queue."""
    name = f"img{uuid.uuid4().hex[:10]}"
    queue = create_queue(sqs_client(moto.endpoint_url), name, visibility=visibility, wait=1)
    document = worker_document({name: queue}, default_queue=name, result_table=create_result_table(
        moto.endpoint_url, f"{name}-results"))
    (work / "worker-config.json").write_text(json.dumps(document))
    assert render_main(["--config", str(work / "worker-config.json"),
                        "--out", str(work / "celeryconfig.py"), "--transport", "bundled"]) == 0
    container_env = {"CELERY_SQS_KIT_CONFIG_JSON": json.dumps(document),
                     "AWS_ENDPOINT_URL": moto.endpoint_url, "AWS_DEFAULT_REGION": REGION,
                     **EMULATOR_KEYS}
    return work, worker_env(work, moto.endpoint_url), container_env


@contextmanager
def worker_container(engine, image, env: dict[str, str], *run_options: str) -> Iterator[str]:
    """A detached worker container on the host network, ready; always removed."""
    name = f"kit-worker-{uuid.uuid4().hex[:8]}"
    engine.docker("run", "--detach", "--name", name, "--network", "host",
                  *(f"--env={key}={value}" for key, value in env.items()), *run_options,
                  image.tag, "--loglevel=INFO", "--concurrency=2")
    try:
        wait_for(lambda: " ready." in logs(engine, name) or not running(engine, name), 60,
                 "the worker container to be ready")
        assert running(engine, name), logs(engine, name)[-3000:]
        yield name
    finally:
        engine.docker("rm", "--force", name, check=False)


def logs(engine, name: str) -> str:
    done = engine.docker("logs", name, check=False)
    return done.stdout + done.stderr


def running(engine, name: str) -> bool:
    return inspect(engine, name, "{{.State.Running}}") == "true"


def inspect(engine, name: str, template: str) -> str:
    return engine.docker("inspect", "--format", template, name).stdout.strip()


def test_image_runs_as_uid_10001_without_cdk_or_pycurl(engine, image):
    probe = engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image.tag, "-c",
        "import os, importlib.util as u; "
        "print(os.getuid(), os.getgid(), u.find_spec('aws_cdk'), u.find_spec('pycurl'))")
    assert probe.stdout.split() == ["10001", "10001", "None", "None"]


def test_container_runs_tasks_published_from_the_host_and_warm_stops(engine, image, fleet):
    work, host_env, container_env = fleet
    with worker_container(engine, image, container_env) as name:
        publish(host_env, "from demo.tasks import add, report\n"
                          "a, b = add.delay(2, 3), report.delay('q3')\n"
                          "assert a.get(timeout=60) == 5, a.result\n"
                          "assert b.get(timeout=60) == 'report q3: ready', b.result\n", work)
        assert "demo.tasks.add" in logs(engine, name)
        engine.docker("stop", "--time", "30", name)
        assert inspect(engine, name, "{{.State.ExitCode}}") == "0"
        assert "Warm shutdown" in logs(engine, name), logs(engine, name)[-3000:]


def test_healthcheck_reports_the_running_worker_healthy(engine, image, fleet):
    _work, _host_env, container_env = fleet
    with worker_container(engine, image, container_env, "--health-interval=1s") as name:
        status = wait_for(lambda: (s := inspect(engine, name, "{{.State.Health.Status}}"))
                          != "starting" and s, 30, "a health verdict")
        last = json.loads(inspect(engine, name, "{{json .State.Health.Log}}"))[-1]
        assert status == "healthy", last
        assert last["ExitCode"] == 0 and last["Output"].startswith("healthy: pid 1,")


@pytest.mark.fault
def test_a_task_of_a_killed_container_reruns_on_another(engine, image, moto, tmp_path):
    """kill -9 of a whole container mid-task (late acks): its held message comes back
    after the visibility timeout, which the heartbeat had kept extending, and a second
    container runs it; nothing is lost."""
    work, host_env, container_env = image_fleet(moto, tmp_path, visibility=20)
    with worker_container(engine, image, container_env) as first:
        publish(host_env, "from demo.tasks import pause\n"
                          "pause.delay(8)\n", work)
        wait_for(lambda: "demo.tasks.pause" in logs(engine, first), 30, "the task to start")
        engine.docker("kill", "--signal", "KILL", first)
        with worker_container(engine, image, container_env) as second:
            wait_for(lambda: "succeeded" in logs(engine, second), 90,
                     "the second container to rerun the task")
            assert "demo.tasks.pause" in logs(engine, second)
        assert "succeeded" not in logs(engine, first)
