"""A local server run as a child process on a loopback port of its own, always stopped.

The child binds port 0 and writes the port it got to a file once it listens, so no
other process (another test worker's server, say) can take the port between the
choice and the bind, and a port that answers is always this child's.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
"""Seconds a child has to start listening (a loaded machine imports slowly)."""


class ServerProcess:
    """Subclasses say how to start (``command(port_file)``: a child that binds
    127.0.0.1 port 0 and writes ``PORT\\n`` to ``port_file`` once listening; and
    ``environment``); :attr:`port` is known once started."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._run_dir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started: no port yet")
        return self._port

    def command(self, port_file: Path) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def start(self):
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._run_dir = Path(tempfile.mkdtemp(prefix="kit-server-"))
        port_file = self._run_dir / "port"
        self._process = subprocess.Popen(self.command(port_file), cwd=PROJECT_ROOT,
                                         env=self.environment(), stdout=self._log,
                                         stderr=subprocess.STDOUT)
        try:
            self._port = self._wait_for_port(port_file)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited ({self._process.returncode}) "
                                   f"before listening; its log: {self.log_path}")
            text = port_file.read_text() if port_file.exists() else ""
            if text.endswith("\n"):  # written whole
                return int(text)
            time.sleep(0.05)
        raise TimeoutError(f"{type(self).__name__} did not listen within {START_TIMEOUT:.0f} s")

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
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
