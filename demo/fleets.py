"""The demo with the fleets as deployed: the ECS worker is the worker image, run as the
deployed task definition says (:mod:`local_aws.ecs_agent`); the EC2 worker is a worker
process authenticated as the instance role through the IMDSv2 stand-in
(:mod:`local_aws.imds`), consuming the EC2 fleet's queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from demo.run import aws_environment, render_config, send_tasks
from local_aws.celery_worker import CeleryWorker, role_environment
from local_aws.container_engine import ContainerEngine
from local_aws.ecs_agent import EcsAgent, deployed_task_definition
from local_aws.imds import InstanceMetadataService
from local_aws.stage import DeployedStage, Step
from local_aws.worker_image import build_image
from runtime.config import load_config


def run_fleets_demo(stage: DeployedStage, engine: ContainerEngine, work_dir: Path,
                    step: Step) -> list[dict[str, Any]]:
    outputs, session, endpoint = stage.outputs, stage.operator.session(), stage.moto.endpoint_url
    step("celeryconfig.py rendered from the WorkerConfig output (producer, EC2 worker), "
         + render_config(stage, work_dir, "bundled"))
    if engine.ensure_base_image():
        step("base image built from Debian packages")
    task_definition = deployed_task_definition(session, endpoint, stage.stack_name)
    container = task_definition["containerDefinitions"][0]
    image = build_image(engine)
    engine.docker("tag", image.tag, container["image"])
    step(f"worker image {image.summary()}; tagged {container['image']}, the deployed task "
         "definition's image")
    agent = EcsAgent(engine, session, endpoint, task_definition,
                     task_role_arn=outputs["TaskRoleArn"],
                     extra_env={"AWS_ENDPOINT_URL": endpoint})
    with agent:
        step(f"ECS task: container {agent.name} ({container['image']} = {image.tag}) runs "
             f"task definition {task_definition['family']}:{task_definition['revision']} as "
             f"declared: user {container['user']}, read-only root, stop timeout "
             f"{container['stopTimeout']} s, health check, {' '.join(container['command'])}; "
             f"as task role {outputs['TaskRoleArn']}")
        ec2_queues = _ec2_queues(stage, container["command"])
        with InstanceMetadataService(session, outputs["InstanceRoleArn"], endpoint,
                                     auto_scaling_group=outputs["AutoScalingGroupName"]) as imds:
            env = role_environment(work_dir, {**aws_environment(stage), **imds.environment()})
            with CeleryWorker("demo.tasks", env, work_dir / "ec2-worker.log", queues=ec2_queues):
                step(f"EC2 worker process ready as instance role {outputs['InstanceRoleArn']} "
                     f"(IMDSv2 stand-in), queues {','.join(ec2_queues)}")
                results = send_tasks(stage, work_dir, step)
            step("EC2 worker stopped (warm shutdown)")
        changes = [e["ProtectionEnabled"] for e in agent.protection_log]
        step("ECS task scale-in protection changes recorded by the agent: "
             f"{changes or 'none (each task ended within the 1 s poll)'}")
        step(f"ECS task stopped by docker stop (exit {agent.stop()}, warm shutdown: "
             f"{'Warm shutdown' in agent.logs()})")
    return results


def _ec2_queues(stage: DeployedStage, ecs_command: list[str]) -> list[str]:
    """The queues the ECS task does not consume: the EC2 fleet's, in this stack."""
    ecs = next(a.split("=", 1)[1] for a in ecs_command if a.startswith("--queues=")).split(",")
    return [q for q in load_config(str(stage.outputs_file)).queues if q not in ecs]
