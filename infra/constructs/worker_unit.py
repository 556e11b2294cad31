"""What an EC2 worker instance runs at boot: the worker image as a systemd unit,
and a second unit that warm-stops it when Auto Scaling terminates the instance.

``celery-worker.service`` runs ``docker run`` with the same user, read-only root,
``/tmp`` scratch, command and environment as the ECS task (see
:mod:`infra.constructs.worker_runtime`), logging to CloudWatch Logs through the
awslogs driver, and is restarted by systemd if it exits.

``celery-worker-drain.service`` polls the instance metadata service (IMDSv2)
every 5 s for ``autoscaling/target-lifecycle-state``. When it reads
``Terminated`` (the instance is in ``Terminating:Wait``, held by the termination
lifecycle hook), it stops the worker unit (``docker stop --time STOP_TIMEOUT``:
SIGTERM, the worker's warm shutdown, then SIGKILL), then completes the lifecycle
action with ``CONTINUE`` so the termination goes on without waiting out the
hook. Between polls it restarts a worker whose image health check
(``python -m runtime.health``) reports it unhealthy.

The instance is Amazon Linux 2023: ``dnf`` installs docker; the AWS CLI is part
of the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Aws

from infra.constructs.worker_runtime import SCRATCH_PATH, WORKER_USER

WORKER_UNIT = "celery-worker.service"
DRAIN_UNIT = "celery-worker-drain.service"
CONTAINER = "celery-worker"
DRAIN_SCRIPT = "/usr/local/bin/celery-worker-drain"
POLL_SECONDS = 5
UNIT_STOP_SLACK = 30
"""systemd waits this long beyond ``docker stop``'s own timeout before killing it."""


def worker_boot_commands(*, image: str, command: Sequence[str], environment: Mapping[str, str],
                         stop_timeout: int, log_group_name: str, registry_login: str | None,
                         auto_scaling_group_name: str, lifecycle_hook_name: str) -> list[str]:
    """The user data lines (bash, as root). ``registry_login`` is the ECR registry
    host to log in to before pulling (an asset's), or ``None`` for an image that
    needs no login."""
    env = " ".join(f'--env "{k}={v}"' for k, v in environment.items())
    login = ("" if registry_login is None else
             f"ExecStartPre=/bin/sh -c 'aws ecr get-login-password --region {Aws.REGION} | "
             f"docker login --username AWS --password-stdin {registry_login}'\n")
    worker_unit = (
        "[Unit]\n"
        "Description=Celery worker (celery-sqs-kit)\n"
        "After=docker.service network-online.target\n"
        "Requires=docker.service\n"
        "[Service]\n"
        "Restart=always\n"
        "RestartSec=10\n"
        f"TimeoutStopSec={stop_timeout + UNIT_STOP_SLACK}\n"
        f"ExecStartPre=-/usr/bin/docker rm --force {CONTAINER}\n"
        f"{login}"
        f"ExecStart=/usr/bin/docker run --rm --name {CONTAINER} --user {WORKER_USER} "
        f"--read-only --tmpfs {SCRATCH_PATH}:rw,nosuid,nodev --stop-timeout {stop_timeout} "
        f"--log-driver awslogs --log-opt awslogs-region={Aws.REGION} "
        f"--log-opt awslogs-group={log_group_name} {env} {image} {' '.join(command)}\n"
        f"ExecStop=/usr/bin/docker stop --time {stop_timeout} {CONTAINER}\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n")
    drain_script = (
        "#!/bin/bash\n"
        "imds() {\n"
        "  local token\n"
        "  token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token "
        "-H 'X-aws-ec2-metadata-token-ttl-seconds: 60') &&\n"
        '    curl -sf -H "X-aws-ec2-metadata-token: $token" '
        '"http://169.254.169.254/latest/meta-data/$1"\n'
        "}\n"
        f"while sleep {POLL_SECONDS}; do\n"
        '  if [ "$(imds autoscaling/target-lifecycle-state)" = Terminated ]; then\n'
        f"    systemctl stop {WORKER_UNIT}\n"
        f"    exec aws autoscaling complete-lifecycle-action --region {Aws.REGION} "
        f"--auto-scaling-group-name {auto_scaling_group_name} "
        f"--lifecycle-hook-name {lifecycle_hook_name} "
        '--instance-id "$(imds instance-id)" --lifecycle-action-result CONTINUE\n'
        "  fi\n"
        f"  if [ \"$(docker inspect --format '{{{{.State.Health.Status}}}}' {CONTAINER} "
        '2>/dev/null)" = unhealthy ]; then\n'
        f"    systemctl restart {WORKER_UNIT}\n"
        "  fi\n"
        "done\n")
    drain_unit = (
        "[Unit]\n"
        "Description=Warm-stop the Celery worker when Auto Scaling terminates this instance\n"
        f"After={WORKER_UNIT}\n"
        "[Service]\n"
        f"ExecStart={DRAIN_SCRIPT}\n"
        "Restart=on-failure\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n")
    return [
        "set -euo pipefail",
        "dnf install --assumeyes --quiet docker",
        "systemctl enable --now docker.service",
        _file(f"/etc/systemd/system/{WORKER_UNIT}", worker_unit),
        _file(DRAIN_SCRIPT, drain_script),
        f"chmod 0755 {DRAIN_SCRIPT}",
        _file(f"/etc/systemd/system/{DRAIN_UNIT}", drain_unit),
        "systemctl daemon-reload",
        f"systemctl enable --now {WORKER_UNIT} {DRAIN_UNIT}",
    ]


def _file(path: str, text: str) -> str:
    """A heredoc with a quoted delimiter: the shell expands nothing in ``text``."""
    return f"cat > {path} <<'CELERY_SQS_KIT_EOF'\n{text}CELERY_SQS_KIT_EOF"
