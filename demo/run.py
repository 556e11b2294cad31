"""Run the demo against a deployed stage: a worker as the ECS task role on the ECS
fleet's queues and one as the EC2 instance role on the EC2 fleet's (each role reaches
its fleet's queues alone), tasks sent as the producer role, results read back from
DynamoDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra.settings import CONTEXT_KEY, FLEET_NAMES, load_spec
from local_aws.celery_worker import CeleryWorker, role_environment
from local_aws.container_credentials import ContainerCredentialsEndpoint
from local_aws.imds import InstanceMetadataService
from local_aws.moto_server import REGION
from local_aws.stage import PROJECT_ROOT, DeployedStage, Step
from runtime.render import TRANSPORTS
from runtime.transport import BANNER
from runtime.render import main as render_main


class DemoFailed(RuntimeError):
    pass


def run_demo(stage: DeployedStage, work_dir: Path, step: Step, *,
             transport: str = "bundled") -> list[dict[str, Any]]:
    """Render the config, start a worker, send the sample tasks; return their results."""
    outputs = stage.outputs
    step("celeryconfig.py rendered from the WorkerConfig output, "
         + render_config(stage, work_dir, transport))
    session = stage.operator.session()
    aws = aws_environment(stage)
    queues = fleet_queues()
    with ContainerCredentialsEndpoint(session, outputs["TaskRoleArn"],
                                      stage.moto.endpoint_url) as task_role, \
            InstanceMetadataService(session, outputs["InstanceRoleArn"],
                                    stage.moto.endpoint_url) as instance_role:
        ecs_env = role_environment(work_dir, {**aws, **task_role.environment()})
        ec2_env = role_environment(work_dir, {**aws, **instance_role.environment()})
        with CeleryWorker("demo.tasks", ecs_env, work_dir / "worker.log",
                          queues=queues["ecs"]) as worker, \
                CeleryWorker("demo.tasks", ec2_env, work_dir / "ec2-worker.log",
                             queues=queues["ec2"], hostname="kit-ec2-worker@%h"):
            step(f"celery worker ready as ECS task role {outputs['TaskRoleArn']} on "
                 f"{','.join(queues['ecs'])}, consuming through "
                 f"{worker_transport(worker.log_text())}")
            step(f"celery worker ready as EC2 instance role {outputs['InstanceRoleArn']} "
                 f"(IMDSv2 stand-in) on {','.join(queues['ec2'])}")
            results = send_tasks(stage, work_dir, step)
        step("celery workers stopped (warm shutdown)")
    return results


def fleet_queues() -> dict[str, list[str]]:
    """The queues each fleet's identity may consume, as cdk.json's spec says."""
    context = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"][CONTEXT_KEY]
    spec = load_spec(context)
    return {fleet: [q.name for q in spec.queues if fleet in spec.workers.consumers(q.name)]
            for fleet in FLEET_NAMES}


def render_config(stage: DeployedStage, work_dir: Path, transport: str) -> str:
    """``celeryconfig.py`` from the stack's outputs, for the producer (and a worker process)."""
    if render_main(["--config", str(stage.outputs_file), "--out", str(work_dir / "celeryconfig.py"),
                    "--transport", transport]) != 0:
        raise DemoFailed("rendering celeryconfig.py failed")
    return f"transport: {transport} ({TRANSPORTS[transport]})"


def aws_environment(stage: DeployedStage) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": stage.moto.endpoint_url, "AWS_DEFAULT_REGION": REGION}


def send_tasks(stage: DeployedStage, work_dir: Path, step: Step) -> list[dict[str, Any]]:
    """``python -m demo.send`` as the producer role; one result per queue, printed."""
    with ContainerCredentialsEndpoint(stage.operator.session(), stage.outputs["ProducerRoleArn"],
                                      stage.moto.endpoint_url,
                                      session_name="demo-producer") as producer:
        step("sending tasks as the producer role")
        sender = subprocess.run(
            [sys.executable, "-m", "demo.send"], cwd=PROJECT_ROOT,
            env=role_environment(work_dir, {**aws_environment(stage), **producer.environment()}),
            capture_output=True, text=True, timeout=180, check=False)
    if sender.returncode != 0:
        raise DemoFailed(f"sending tasks failed:\n{sender.stderr[-3000:]}")
    results = [json.loads(line) for line in sender.stdout.splitlines()]
    for r in results:
        step(f"  {r['task']}: {r['state']} -> {r['result']!r}")
    return results


def worker_transport(log: str) -> str:
    """Which transport the worker runs, as its own log says (the bundled one logs its
    banner when its first channel opens); stock kombu otherwise."""
    return "the bundled transport (runtime.transport)" if BANNER in log \
        else "stock kombu (kombu.transport.SQS)"
