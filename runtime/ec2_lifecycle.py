"""Drain an EC2 worker when Auto Scaling terminates its instance.

    python -m runtime.ec2_lifecycle --pid WORKER_PID [--poll 5]

The same protocol as the instance's ``celery-worker-drain`` unit
(:mod:`infra.constructs.worker_unit`), for a worker run as a process rather than
the image under systemd: poll the instance metadata service (IMDSv2) for
``autoscaling/target-lifecycle-state``; when it reads ``Terminated`` (the
instance is held in ``Terminating:Wait`` by the termination lifecycle hook),
send SIGTERM to the worker's main process (its warm shutdown: running tasks
finish, unstarted messages go back to SQS), wait for it to exit, then complete
the lifecycle action with ``CONTINUE`` so the termination goes on at once instead
of waiting out the hook's heartbeat timeout.

The group and hook come from ``$CELERY_SQS_KIT_AUTO_SCALING_GROUP`` and
``$CELERY_SQS_KIT_LIFECYCLE_HOOK`` (default :data:`DEFAULT_HOOK_NAME`, the hook
the EC2 fleet makes); without the group variable, from the instance's
``aws:autoscaling:groupName`` tag (instance metadata tags must be on). The
instance id comes from the metadata service, credentials from the instance
profile (botocore's own IMDS provider). Exit status: 0 once the action is
completed, 1 if completing it failed (the hook's default result then applies).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import boto3

from runtime.health import process_running

DEFAULT_HOOK_NAME = "celery-worker-drain"
GROUP_ENV = "CELERY_SQS_KIT_AUTO_SCALING_GROUP"
HOOK_ENV = "CELERY_SQS_KIT_LIFECYCLE_HOOK"
IMDS_ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
IMDS_DEFAULT = "http://169.254.169.254/"
TERMINATED = "Terminated"

logger = logging.getLogger("runtime.ec2_lifecycle")


class InstanceMetadata:
    """IMDSv2 reads, at the endpoint botocore itself uses (``$AWS_EC2_METADATA_SERVICE_ENDPOINT``)."""

    def __init__(self, endpoint: str | None = None, timeout: float = 2.0) -> None:
        self.endpoint = (endpoint or os.environ.get(IMDS_ENDPOINT_ENV) or IMDS_DEFAULT).rstrip("/")
        self.timeout = timeout

    def get(self, path: str) -> str | None:
        """The value at ``latest/meta-data/PATH``, or None when it is not there (404)."""
        token_request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        with urllib.request.urlopen(token_request, timeout=self.timeout) as answer:
            token = answer.read().decode()
        request = urllib.request.Request(f"{self.endpoint}/latest/meta-data/{path}",
                                         headers={"X-aws-ec2-metadata-token": token})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.read().decode().strip()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise


def wait_for_termination(imds: InstanceMetadata, poll: float) -> None:
    """Return once the instance's target lifecycle state is ``Terminated``."""
    while True:
        try:
            if imds.get("autoscaling/target-lifecycle-state") == TERMINATED:
                return
        except OSError as error:  # a metadata hiccup is no reason to stop watching
            logger.warning("instance metadata unreachable: %s", error)
        time.sleep(poll)


def warm_stop(pid: int, poll: float = 0.5) -> None:
    """SIGTERM the worker's main process and wait, however long, for it to exit: the
    hook's heartbeat timeout (stop timeout + slack) bounds the wait from outside."""
    os.kill(pid, signal.SIGTERM)
    while process_running(pid):
        time.sleep(poll)


def complete_lifecycle_action(imds: InstanceMetadata) -> dict[str, str]:
    group = os.environ.get(GROUP_ENV) or imds.get("tags/instance/aws:autoscaling:groupName")
    if not group:
        raise RuntimeError(f"no Auto Scaling group: set ${GROUP_ENV} or turn on instance "
                           "metadata tags")
    action = {"AutoScalingGroupName": group,
              "LifecycleHookName": os.environ.get(HOOK_ENV) or DEFAULT_HOOK_NAME,
              "InstanceId": imds.get("instance-id") or "",
              "LifecycleActionResult": "CONTINUE"}
    boto3.client("autoscaling").complete_lifecycle_action(**action)
    return action


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.ec2_lifecycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pid", type=int, required=True, help="the worker's main process")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between reads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    imds = InstanceMetadata()
    wait_for_termination(imds, args.poll)
    logger.info("target lifecycle state %s: warm-stopping worker %d", TERMINATED, args.pid)
    warm_stop(args.pid)
    try:
        action = complete_lifecycle_action(imds)
    except Exception as error:
        logger.error("completing the lifecycle action failed: %s", error)
        return 1
    logger.info("worker %d stopped; lifecycle action completed: %s", args.pid, action)
    return 0


if __name__ == "__main__":
    sys.exit(main())
