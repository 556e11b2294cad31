"""Run ``moto_server`` on a loopback port of its own, optionally enforcing IAM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from local_aws.server_process import ServerProcess

ACCOUNT_ID = "123456789012"
"""moto's default account."""
REGION = "us-east-1"


class MotoServer(ServerProcess):
    """``with MotoServer(enforce_iam=True) as moto: moto.endpoint_url``.

    Runs :mod:`local_aws.moto_main` (moto's server with resource-level checks
    for DynamoDB and SSM). With ``enforce_iam``, moto serves
    ``unauthenticated_calls`` requests without checking them, then enforces IAM
    on every later one: only keys of IAM users it knows work, and assumed-role
    credentials are held to the role's policies.
    """

    def __init__(self, *, enforce_iam: bool = False, unauthenticated_calls: int = 3,
                 log_path: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(log_path)
        self.enforce_iam = enforce_iam
        self.unauthenticated_calls = unauthenticated_calls
        self.extra_env = dict(extra_env or {})

    @property
    def endpoint_url(self) -> str:
        # localhost, not 127.0.0.1: moto parses CloudFormation's TemplateURL host.
        return f"http://localhost:{self.port}"

    def command(self, port_file: Path) -> list[str]:
        return [sys.executable, "-m", "local_aws.moto_main", "--port-file", str(port_file)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")}
        if self.enforce_iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.unauthenticated_calls)
        env.update(self.extra_env)
        return env
