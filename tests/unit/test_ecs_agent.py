"""The ECS agent stand-in turns a described task definition into ``docker run`` as declared."""

from __future__ import annotations

import pytest

from local_aws.ecs_agent import docker_run_args

TASK_DEFINITION = {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/Td:1",
    "volumes": [{"name": "scratch"}],
    "containerDefinitions": [{
        "name": "Worker", "image": "celery-sqs-kit-worker:local",
        "command": ["--loglevel=INFO", "--concurrency=2", "--queues=celery"],
        "environment": [{"name": "CELERY_SQS_KIT_CONFIG", "value": "ssm:/kit/config"}],
        "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/tmp", "readOnly": False}],
        "stopTimeout": 120, "user": "10001:10001", "readonlyRootFilesystem": True,
        "healthCheck": {"command": ["CMD", "python", "-m", "runtime.health"], "interval": 30,
                        "timeout": 10, "retries": 3, "startPeriod": 60}}],
}


def test_runs_the_container_as_declared():
    args = docker_run_args(TASK_DEFINITION, "t1", {"ECS_AGENT_URI": "http://127.0.0.1:1/api/x"})
    assert args == [
        "run", "--detach", "--name", "t1", "--network", "host", "--user", "10001:10001",
        "--stop-timeout", "120", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev",
        "--health-cmd=python -m runtime.health", "--health-interval=30s",
        "--health-timeout=10s", "--health-start-period=60s", "--health-retries=3",
        "--env=CELERY_SQS_KIT_CONFIG=ssm:/kit/config",
        "--env=ECS_AGENT_URI=http://127.0.0.1:1/api/x",
        "celery-sqs-kit-worker:local", "--loglevel=INFO", "--concurrency=2", "--queues=celery"]


def test_an_entry_point_list_becomes_entrypoint_and_leading_arguments():
    container = {**TASK_DEFINITION["containerDefinitions"][0],
                 "entryPoint": ["celery", "worker"], "healthCheck": None}
    args = docker_run_args({**TASK_DEFINITION, "containerDefinitions": [container]}, "t1", {})
    assert args[args.index("--entrypoint"):] == [
        "--entrypoint", "celery", "celery-sqs-kit-worker:local", "worker", "--loglevel=INFO",
        "--concurrency=2", "--queues=celery"]


def test_a_host_volume_is_refused():
    td = {**TASK_DEFINITION, "volumes": [{"name": "scratch", "host": {"sourcePath": "/x"}}]}
    with pytest.raises(ValueError, match="scratch"):
        docker_run_args(td, "t1", {})
