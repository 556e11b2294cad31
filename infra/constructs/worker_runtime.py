"""How a worker container runs, the same on ECS and on EC2: its image, user,
command, environment, health check, and the one path it may write.

The image is the repository's ``Dockerfile`` (``ENTRYPOINT ["celery", "worker"]``),
either referenced as it is (an image URI: the local stage's tag, or a registry's)
or built as a CDK Docker image asset and pushed to the bootstrap repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Union

from aws_cdk import Aws, Duration, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import rules
from infra.backlog import BacklogPlan, target_backlog_per_worker
from runtime.celery_settings import BUNDLED_PREFETCH
from runtime.config import ENV_SOURCE, SSM_PREFIX
from runtime.errors import SpecError
from runtime.health import IMAGE_HEALTH_FILE

WorkerImage = Union[str, ecr_assets.DockerImageAsset]
"""An image URI run as it is, or an asset CDK builds and pushes on deploy."""

WORKER_USER = "10001:10001"
"""The Dockerfile's ``USER``; said again so a base image's user cannot replace it."""
SCRATCH_PATH = str(PurePosixPath(IMAGE_HEALTH_FILE).parent)
"""The only writable path under a read-only root: where the health state file lives."""
HEALTH_COMMAND = ("python", "-m", "runtime.health")
HEALTH_INTERVAL = Duration.seconds(30)
HEALTH_TIMEOUT = Duration.seconds(10)
HEALTH_START_PERIOD = Duration.seconds(60)
HEALTH_RETRIES = 3
"""The Dockerfile's ``HEALTHCHECK``: ECS ignores an image's own, so the task says it again."""
TRANSPORT_ENV = "CELERY_SQS_KIT_TRANSPORT"
BUNDLED = "bundled"
"""Read by ``runtime.celeryconfig``; the fleets' scaling target assumes the bundled
transport's prefetch multiplier, so the fleets say so rather than trust the image."""


PRIVATE_SUBNETS = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
"""Where workers run unless told otherwise: no public IP, egress through NAT."""


def worker_command(*, concurrency: int, queues: Sequence[str]) -> list[str]:
    """Arguments after the image's ``celery worker`` entry point."""
    return ["--loglevel=INFO", f"--concurrency={concurrency}", f"--queues={','.join(queues)}"]


def worker_environment(config_parameter_name: str) -> dict[str, str]:
    """Where the worker reads its configuration (the stack's SSM parameter, which
    its role may GetParameter) and the region its clients use. No credentials:
    those come from the task role or the instance profile."""
    return {
        ENV_SOURCE: f"{SSM_PREFIX}{config_parameter_name}",
        TRANSPORT_ENV: BUNDLED,
        "AWS_REGION": Aws.REGION,
        "AWS_DEFAULT_REGION": Aws.REGION,
    }


def image_uri(image: WorkerImage) -> str:
    return image if isinstance(image, str) else image.image_uri


def worker_image_asset(scope: Construct, construct_id: str,
                       directory: str) -> ecr_assets.DockerImageAsset:
    """The Dockerfile in ``directory`` as an asset for linux/amd64, the platform of
    Fargate's default and of the default instance type. Its ``.dockerignore``
    decides what is sent to the build."""
    return ecr_assets.DockerImageAsset(scope, construct_id, directory=directory,
                                       platform=ecr_assets.Platform.LINUX_AMD64)


def grant_image_pull(image: WorkerImage, grantee: iam.IGrantable) -> None:
    """An asset's repository is private: whoever pulls needs ECR read on it."""
    if not isinstance(image, str):
        image.repository.grant_pull(grantee)



def backlog_plan(queue_count: int, *, concurrency: int, target_backlog_per_worker: int | None,
                 min_capacity: int, max_capacity: int) -> BacklogPlan:
    """A fleet construct's scaling props, checked (before any resource exists) and
    with the target derived from ``concurrency`` when not given."""
    if queue_count < 1:
        raise SpecError("queues", "must hold at least one CeleryQueue", queue_count)
    target = _derived_target(concurrency, target_backlog_per_worker)
    rules.check_fleet("", min_capacity=min_capacity, max_capacity=max_capacity,
                      concurrency=concurrency, target_backlog_per_worker=target,
                      unresolved=Token.is_unresolved)
    return BacklogPlan(queue_count=queue_count, target=target, min_capacity=min_capacity,
                       max_capacity=max_capacity)


def _derived_target(concurrency: int, explicit: int | None) -> int:
    return target_backlog_per_worker(concurrency=concurrency,
                                     prefetch_multiplier=BUNDLED_PREFETCH, explicit=explicit)


def worker_security_group(scope: Construct, construct_id: str, vpc: ec2.IVpc) -> ec2.SecurityGroup:
    """No ingress (a worker only calls out), and egress to HTTPS only: every AWS API
    a worker calls, and image layers. DNS, the instance metadata service and NTP
    are not filtered by security groups."""
    group = ec2.SecurityGroup(scope, construct_id, vpc=vpc, allow_all_outbound=False,
                              description="Celery workers: no ingress, HTTPS egress only")
    group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443),
                          "AWS APIs (SQS, SSM, STS, Logs, ECR, Auto Scaling) and image layers")
    return group
