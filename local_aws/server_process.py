"""A local server run as a child process on a free loopback port, always stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from local_aws.ports import free_port, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """Subclasses say how to start (``command``, ``environment``) and where to reach it."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def start(self):
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(self.command(), cwd=PROJECT_ROOT, env=self.environment(),
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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
