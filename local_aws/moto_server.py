"""Run ``moto_server`` on a free loopback port, optionally enforcing IAM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from local_aws.ports import free_port, wait_for_port

ACCOUNT_ID = "123456789012"
"""moto's default account."""
REGION = "us-east-1"


class MotoServer:
    """``with MotoServer(enforce_iam=True) as moto: moto.endpoint_url``.

    Runs :mod:`local_aws.moto_main` (moto's server with resource-level checks
    for DynamoDB and SSM).

    With ``enforce_iam``, moto serves ``unauthenticated_calls`` requests without
    checking them, then enforces IAM on every later one: only keys of IAM users
    it knows work, and assumed-role credentials are held to the role's policies.
    """

    def __init__(self, *, enforce_iam: bool = False, unauthenticated_calls: int = 3,
                 log_path: Path | None = None) -> None:
        self.enforce_iam = enforce_iam
        self.unauthenticated_calls = unauthenticated_calls
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def endpoint_url(self) -> str:
        # localhost, not 127.0.0.1: moto parses CloudFormation's TemplateURL host.
        return f"http://localhost:{self.port}"

    def start(self) -> MotoServer:
        env = dict(os.environ)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_ENDPOINT_URL"):
            env.pop(name, None)
        if self.enforce_iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.unauthenticated_calls)
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local_aws.moto_main", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=Path(__file__).resolve().parent.parent,
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30, alive=lambda: self._process.poll() is None)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
