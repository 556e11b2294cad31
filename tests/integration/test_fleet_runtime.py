"""The fleets' runtime, proven on a deployed stage (the real CDK CLI to moto with IAM on,
fleets without their scaling): the worker image run as the DEPLOYED task definition says
by the ECS agent stand-in, authenticated as the task role; a worker process authenticated
as the instance role through the IMDSv2 stand-in; tasks sent as the producer role.

ECS: scale-in protection is set while a task runs and cleared after, and ``docker stop``
(the declared stop timeout) during a task lets it finish. EC2: target-lifecycle-state
``Terminated`` warm-stops the worker, and the lifecycle action is completed only after.
A worker denied its queue exits, logging the typed error naming queue and action."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from local_aws.celery_worker import CeleryWorker, role_environment
from local_aws.container_credentials import ContainerCredentialsEndpoint
from local_aws.ecs_agent import EcsAgent, deployed_task_definition
from local_aws.http_thread import LoopbackService
from local_aws.imds import InstanceMetadataService
from local_aws.moto_server import REGION
from local_aws.stage import PROJECT_ROOT
from local_aws.worker_image import build_image
from runtime.render import main as render_main
from tests.integration.fleet import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def work(stage, tmp_path_factory) -> Path:
    """A directory whose rendered ``celeryconfig.py`` lets ``demo.tasks`` publish."""
    work = tmp_path_factory.mktemp("fleet-work")
    assert render_main(["--config", str(stage.outputs_file),
                        "--out", str(work / "celeryconfig.py")]) == 0
    return work


def aws(stage) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": stage.moto.endpoint_url, "AWS_DEFAULT_REGION": REGION}


def as_producer(stage, work: Path, code: str) -> str:
    """Run ``code`` (which sends tasks and prints) as the deployed producer role."""
    with ContainerCredentialsEndpoint(stage.operator.session(), stage.outputs["ProducerRoleArn"],
                                      stage.moto.endpoint_url, session_name="producer") as ep:
        done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT,
                              env=role_environment(work, {**aws(stage), **ep.environment()}),
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def task(engine, stage) -> Iterator[EcsAgent]:
    """One task of the deployed task definition, its image built and tagged as it names."""
    engine.ensure_base_image()
    task_definition = deployed_task_definition(stage.operator.session(),
                                               stage.moto.endpoint_url, stage.stack_name)
    engine.docker("tag", build_image(engine).tag,
                  task_definition["containerDefinitions"][0]["image"])
    agent = EcsAgent(engine, stage.operator.session(), stage.moto.endpoint_url, task_definition,
                     task_role_arn=stage.outputs["TaskRoleArn"],
                     extra_env={"AWS_ENDPOINT_URL": stage.moto.endpoint_url})
    with agent:
        yield agent


def protections(task: EcsAgent) -> list[bool]:
    return [entry["ProtectionEnabled"] for entry in task.protection_log]


def test_ecs_task_runs_as_the_task_role_protected_while_busy_and_finishes_on_stop(
        task, stage, work):
    assert "--read-only" in task.run_args() and "--stop-timeout" in task.run_args()
    out = as_producer(stage, work, "from demo.tasks import whoami, pause\n"
                                   "print(whoami.delay().get(timeout=60))\n"
                                   "print(pause.delay(2).get(timeout=60))\n")
    role_name = stage.outputs["TaskRoleArn"].rsplit("/", 1)[-1]
    assert out.splitlines()[0].startswith(f"arn:aws:sts::123456789012:assumed-role/{role_name}/")
    # Set while the task ran; cleared once the worker was idle for 10 s.
    wait_for(lambda: protections(task) == [True, False], 30, "protection set, then cleared")
    assert task.protection_log[0]["ExpiresInMinutes"] == 60

    # docker stop mid-task: the declared stop timeout (120 s) covers the task; it finishes.
    with ContainerCredentialsEndpoint(stage.operator.session(), stage.outputs["ProducerRoleArn"],
                                      stage.moto.endpoint_url, session_name="producer") as ep:
        env = role_environment(work, {**aws(stage), **ep.environment()})
        waiter = subprocess.Popen(
            [sys.executable, "-c", "from demo.tasks import pause\n"
                                   "print(pause.delay(6).get(timeout=120))\n"],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: protections(task) == [True, False, True], 30, "protection for the task")
        assert task.stop() == 0
        out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and out.strip() == "6", err[-2000:]
    logs = task.logs()
    assert "Warm shutdown" in logs and "demo.tasks.pause" in logs and "succeeded" in logs


class LifecycleRecorder(LoopbackService):
    """An Auto Scaling endpoint that records CompleteLifecycleAction (moto has none)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                call = {k: v[0] for k, v in parse_qs(body).items()}
                call["Credential"] = self.headers["Authorization"].split("Credential=")[1] \
                    .split("/")[0]
                recorder.calls.append(call)
                data = (b'<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws'
                        b'.com/doc/2011-01-01/"><CompleteLifecycleActionResult/><ResponseMetadata>'
                        b'<RequestId>1</RequestId></ResponseMetadata>'
                        b'</CompleteLifecycleActionResponse>')
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler)


def test_ec2_worker_as_the_instance_role_drains_on_terminated(stage, work, tmp_path):
    group = stage.outputs["AutoScalingGroupName"]
    with LifecycleRecorder() as recorder, \
            InstanceMetadataService(stage.operator.session(), stage.outputs["InstanceRoleArn"],
                                    stage.moto.endpoint_url, auto_scaling_group=group) as imds:
        env = role_environment(work, {**aws(stage), **imds.environment(),
                                      "AWS_ENDPOINT_URL_AUTO_SCALING":
                                          f"http://127.0.0.1:{recorder.port}"})
        method = subprocess.run([sys.executable, "-c", "import boto3\nc = boto3.Session()"
                                 ".get_credentials()\nprint(c.method, c.access_key)"],
                                env=env, capture_output=True, text=True, check=True).stdout.split()
        assert method[0] == "iam-role"
        worker = CeleryWorker("demo.tasks", env, tmp_path / "worker.log", queues=["reports"])
        with worker:
            drain = subprocess.Popen([sys.executable, "-m", "runtime.ec2_lifecycle", "--pid",
                                      str(worker.pid), "--poll", "0.2"], cwd=PROJECT_ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
            out = as_producer(stage, work, "from demo.tasks import report, whoami, pause\n"
                                           "print(report.delay('q3').get(timeout=60))\n"
                                           "print(whoami.apply_async(queue='reports')"
                                           ".get(timeout=60))\n"
                                           "r = pause.apply_async((4,), queue='reports')\n"
                                           "print(r.id)\n")
            lines = out.splitlines()
            role_name = stage.outputs["InstanceRoleArn"].rsplit("/", 1)[-1]
            assert lines[0] == "report q3: ready"
            assert lines[1].startswith(f"arn:aws:sts::123456789012:assumed-role/{role_name}/")
            wait_for(lambda: f"{lines[2]}] received" in worker.log_text(), 30, "the pause task")
            imds.target_lifecycle_state = "Terminated"
            drained = drain.communicate(timeout=60)[0]
            assert drain.returncode == 0, drained
        log = worker.log_text()
        assert f"Task demo.tasks.pause[{lines[2]}] succeeded" in log, log[-3000:]
        assert worker.stop() == 0
    assert recorder.calls == [{
        "Action": "CompleteLifecycleAction", "Version": "2011-01-01",
        "AutoScalingGroupName": group, "LifecycleHookName": "celery-worker-drain",
        "InstanceId": imds.instance_id, "LifecycleActionResult": "CONTINUE",
        "Credential": method[1]}]


def test_a_worker_denied_its_queue_says_which_queue_and_action(stage, work, tmp_path):
    """The producer role may send but not consume: as a worker, the check before consuming
    is refused with the transport's typed error (QueueAccessDenied), logged with queue,
    action and URL, and the worker exits instead of polling in vain."""
    with ContainerCredentialsEndpoint(stage.operator.session(), stage.outputs["ProducerRoleArn"],
                                      stage.moto.endpoint_url, session_name="not-a-worker") as ep:
        env = role_environment(work, {**aws(stage), **ep.environment()})
        worker = CeleryWorker("demo.tasks", env, tmp_path / "denied.log", queues=["celery"])
        try:
            with pytest.raises(RuntimeError, match="celery worker exited with 1"):
                worker.start(timeout=60)
        finally:
            worker.stop()
    (line,) = [l for l in worker.log_text().splitlines() if "not consuming" in l]
    assert "GetQueueAttributes on queue 'celery' failed: AccessDenied (queue URL " in line
    assert "the worker's role" in line
