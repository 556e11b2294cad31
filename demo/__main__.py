"""``make demo``: deploy to a local AWS emulator, run a worker as the ECS task
role, send tasks as the producer role, print the results, stop everything."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from local_aws.celery_worker import CeleryWorker, role_environment
from local_aws.container_credentials import ContainerCredentialsEndpoint
from local_aws.moto_server import REGION
from local_aws.stage import PROJECT_ROOT, deploy_stage
from runtime.render import main as render_main

WORK_DIR = PROJECT_ROOT / ".build" / "demo"


def main() -> int:
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    stage = deploy_stage(WORK_DIR, step=step)
    try:
        outputs = stage.outputs
        step(f"stack outputs written to {stage.outputs_file.relative_to(PROJECT_ROOT)}")
        render_main(["--config", str(stage.outputs_file),
                     "--out", str(WORK_DIR / "celeryconfig.py")])
        step("celeryconfig.py rendered from the WorkerConfig output")
        session = stage.operator.session()
        aws = {"AWS_ENDPOINT_URL": stage.moto.endpoint_url, "AWS_DEFAULT_REGION": REGION}
        with ContainerCredentialsEndpoint(session, outputs["TaskRoleArn"],
                                          stage.moto.endpoint_url) as task_role:
            env = role_environment(WORK_DIR, {**aws, **task_role.environment()})
            with CeleryWorker("demo.tasks", env, WORK_DIR / "worker.log"):
                step(f"celery worker ready as ECS task role {outputs['TaskRoleArn']}")
                with ContainerCredentialsEndpoint(session, outputs["ProducerRoleArn"],
                                                  stage.moto.endpoint_url,
                                                  session_name="demo-producer") as producer:
                    step("sending tasks as the producer role")
                    sender = subprocess.run(
                        [sys.executable, "-m", "demo.send"], cwd=PROJECT_ROOT,
                        env=role_environment(WORK_DIR, {**aws, **producer.environment()}),
                        capture_output=True, text=True, timeout=180, check=False)
                if sender.returncode != 0:
                    print(sender.stderr[-3000:], file=sys.stderr)
                    step("FAILED: tasks did not complete")
                    return 1
                for line in sender.stdout.splitlines():
                    r = json.loads(line)
                    step(f"  {r['task']}: {r['state']} -> {r['result']!r}")
            step("celery worker stopped (warm shutdown)")
    finally:
        stage.moto.stop()
    step(f"emulator stopped; demo finished in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
