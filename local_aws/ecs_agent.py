"""A local stand-in for the ECS agent: runs the DEPLOYED task definition's worker
container with docker, as declared, and serves what the agent serves a task.

    task_definition = deployed_task_definition(session, endpoint_url, "CelerySqsKit")
    with EcsAgent(engine, session, endpoint_url, task_definition,
                  task_role_arn=outputs["TaskRoleArn"]) as task:
        task.protection_log        # every PUT task-protection/v1/state, in order

The task definition is read back from the emulator (``DescribeTaskDefinition``),
never rebuilt from the spec, so what runs is what was deployed: image, entry
point and command, environment, user, stop timeout (``--stop-timeout``: a plain
``docker stop`` then waits that long, as ECS does), a read-only root with a
tmpfs for each task-scoped volume it mounts (Fargate's ephemeral volumes), and
the health check (``--health-*``). Every container runs with ``--network host``
(the engine has no bridge), so the agent's endpoints on 127.0.0.1 are reachable
from inside it:

- the task role's credentials, at ``AWS_CONTAINER_CREDENTIALS_FULL_URI``
  (:class:`ContainerCredentialsEndpoint`). moto's CloudFormation drops a task
  definition's ``TaskRoleArn``, so the role comes from the task definition when
  it has one, else from ``task_role_arn`` (the stack's ``TaskRoleArn`` output);
- ``ECS_AGENT_URI``, whose ``task-protection/v1/state`` records each protection
  change and answers as the agent does.

Not reproduced: the awslogs driver (``docker logs`` instead), CPU and memory
limits, and pulling (the image must be on the engine: the local stage runs an
image URI it built, see :mod:`local_aws.worker_image`).
"""

from __future__ import annotations

import json
import secrets
import shlex
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3

from local_aws.container_credentials import ContainerCredentialsEndpoint
from local_aws.container_engine import ContainerEngine
from local_aws.http_thread import LoopbackHttpServer

PROTECTION_PATH = "/task-protection/v1/state"


def deployed_task_definition(session: boto3.Session, endpoint_url: str,
                             stack_name: str) -> dict[str, Any]:
    """The stack's one ECS task definition, as the emulator describes it."""
    cfn = session.client("cloudformation", endpoint_url=endpoint_url)
    arns = [r["PhysicalResourceId"] for r in cfn.list_stack_resources(
        StackName=stack_name)["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::ECS::TaskDefinition"]
    if len(arns) != 1:
        raise RuntimeError(f"stack {stack_name} has {len(arns)} ECS task definitions, not 1 "
                           "(deployed with the fleets on?)")
    ecs = session.client("ecs", endpoint_url=endpoint_url)
    return ecs.describe_task_definition(taskDefinition=arns[0])["taskDefinition"]


def docker_run_args(task_definition: Mapping[str, Any], name: str,
                    extra_env: Mapping[str, str]) -> list[str]:
    """``docker run`` arguments for the task definition's one container, as declared."""
    containers = task_definition["containerDefinitions"]
    if len(containers) != 1:
        raise ValueError(f"expected one container, the worker; got {len(containers)}")
    c = containers[0]
    args = ["run", "--detach", "--name", name, "--network", "host"]
    if c.get("user"):
        args += ["--user", c["user"]]
    if c.get("stopTimeout") is not None:
        args += ["--stop-timeout", str(c["stopTimeout"])]
    if c.get("readonlyRootFilesystem"):
        args.append("--read-only")
    task_volumes = {v["name"] for v in task_definition.get("volumes", []) if not v.get("host")}
    for mount in c.get("mountPoints", []):
        if mount["sourceVolume"] not in task_volumes:
            raise ValueError(f"volume {mount['sourceVolume']!r} is not a task-scoped volume")
        mode = "ro" if mount.get("readOnly") else "rw"
        args += ["--tmpfs", f"{mount['containerPath']}:{mode},nosuid,nodev"]
    args += _health_args(c.get("healthCheck"))
    env = {e["name"]: e["value"] for e in c.get("environment", [])}
    env.update(extra_env)
    args += [f"--env={key}={value}" for key, value in env.items()]
    entry_point = c.get("entryPoint") or []
    if entry_point:
        args += ["--entrypoint", entry_point[0]]
    return [*args, c["image"], *entry_point[1:], *c.get("command", [])]


def _health_args(check: Mapping[str, Any] | None) -> list[str]:
    if not check:
        return []
    kind, *command = check["command"]
    shell = command[0] if kind == "CMD-SHELL" else shlex.join(command)
    return [f"--health-cmd={shell}", f"--health-interval={check.get('interval', 30)}s",
            f"--health-timeout={check.get('timeout', 5)}s",
            f"--health-start-period={check.get('startPeriod', 0)}s",
            f"--health-retries={check.get('retries', 3)}"]


class EcsAgent:
    """One task of the task definition, running; :meth:`stop` stops it as ECS would."""

    def __init__(self, engine: ContainerEngine, session: boto3.Session, endpoint_url: str,
                 task_definition: Mapping[str, Any], *, task_role_arn: str | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        role = task_definition.get("taskRoleArn") or task_role_arn
        if not role:
            raise ValueError("the task definition names no task role; pass task_role_arn")
        self.engine = engine
        self.task_definition = task_definition
        self.name = f"kit-task-{uuid.uuid4().hex[:8]}"
        self.task_arn = (task_definition["taskDefinitionArn"].split(":task-definition/")[0]
                         + f":task/local/{uuid.uuid4().hex}")
        self.protection_log: list[dict[str, Any]] = []
        self._protection: dict[str, Any] = {"ProtectionEnabled": False}
        self._lock = threading.Lock()
        self._credentials = ContainerCredentialsEndpoint(session, role, endpoint_url,
                                                         session_name=self.name)
        self._agent_path = f"/api/{secrets.token_hex(8)}"
        self._agent = LoopbackHttpServer(self._agent_handler())
        self._extra_env = dict(extra_env or {})

    @property
    def agent_uri(self) -> str:
        return f"http://127.0.0.1:{self._agent.port}{self._agent_path}"

    def run_args(self) -> list[str]:
        env = {**self._extra_env, **self._credentials.environment(),
               "ECS_AGENT_URI": self.agent_uri}
        return docker_run_args(self.task_definition, self.name, env)

    def start(self, ready_timeout: float = 60) -> EcsAgent:
        self._credentials.start()
        self._agent.start()
        try:
            self.engine.docker(*self.run_args())
            deadline = time.monotonic() + ready_timeout
            while " ready." not in self.logs():
                if not self.running() or time.monotonic() > deadline:
                    raise RuntimeError(f"task container {self.name} not ready:\n"
                                       f"{self.logs()[-3000:]}")
                time.sleep(0.2)
        except BaseException:
            self.remove()
            raise
        return self

    def logs(self) -> str:
        done = self.engine.docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def inspect(self, template: str) -> str:
        return self.engine.docker("inspect", "--format", template, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def stop(self) -> int:
        """``docker stop`` with the container's own stop timeout (the declared
        ``stopTimeout``), as ECS stops a task; returns the exit code."""
        self.engine.docker("stop", self.name, timeout=900)
        return int(self.inspect("{{.State.ExitCode}}"))

    def remove(self) -> None:
        self.engine.docker("rm", "--force", self.name, check=False)
        self._agent.stop()
        self._credentials.stop()

    def __enter__(self) -> EcsAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _set_protection(self, body: Mapping[str, Any]) -> dict[str, Any]:
        enabled = bool(body.get("ProtectionEnabled"))
        expires = None
        if enabled:
            minutes = int(body.get("ExpiresInMinutes") or 120)  # ECS's default
            expires = (datetime.now(timezone.utc) + timedelta(minutes=minutes)).isoformat()
        with self._lock:
            self.protection_log.append({"at": time.monotonic(), **body})
            self._protection = {"ProtectionEnabled": enabled, "ExpirationDate": expires,
                                "TaskArn": self.task_arn}
            return dict(self._protection)

    def _agent_handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != agent._agent_path + PROTECTION_PATH:
                    self._answer(404, {"error": {"Code": "NotFound", "Message": self.path}})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._answer(400, {"error": {"Code": "InvalidParameterException"}})
                    return
                self._answer(200, {"protection": agent._set_protection(body)})

            def do_GET(self) -> None:  # noqa: N802
                if self.path != agent._agent_path + PROTECTION_PATH:
                    self._answer(404, {"error": {"Code": "NotFound", "Message": self.path}})
                    return
                with agent._lock:
                    self._answer(200, {"protection": dict(agent._protection)})

            def _answer(self, status: int, answer: Mapping[str, Any]) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Silent: the protection log is the record."""

        return Handler
