"""A real ``celery worker`` process with a clean, key-free environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from local_aws.stage import PROJECT_ROOT
from runtime.health import process_running

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def role_environment(config_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a process that must authenticate only through its role:
    every static credential variable removed, ``celeryconfig`` importable."""
    env = {k: v for k, v in os.environ.items()
           if k not in CREDENTIAL_VARIABLES and not k.startswith("AWS_CONTAINER_")}
    # No shared credentials files either: the default chain must reach the role.
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_CONFIG_FILE"] = os.devnull
    env["PYTHONPATH"] = os.pathsep.join([str(config_dir), str(PROJECT_ROOT)])
    env.update(extra)
    return env


class CeleryWorker:
    """``with CeleryWorker(app, env, log) as w: ...``; stopped with a warm shutdown
    (``stop``), or killed as a container is (``kill``)."""

    def __init__(self, app: str, env: Mapping[str, str], log_path: Path, *,
                 pool: str = "prefork", concurrency: int = 2,
                 queues: list[str] | None = None, hostname: str = "kit-worker@%h") -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=INFO",
                f"--pool={pool}", f"--concurrency={concurrency}", "--without-heartbeat",
                "--without-gossip", "--without-mingle", f"--hostname={hostname}"]
        if queues:
            args.append("--queues=" + ",".join(queues))
        self._args = args
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> CeleryWorker:
        """Start the worker and wait until it says it is ready."""
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> CeleryWorker:
        """Start the worker without waiting for it (see ``wait_ready``)."""
        self._log = open(self.log_path, "wb")
        self._process = subprocess.Popen(self._args, env=self._env, cwd=PROJECT_ROOT,
                                         stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60) -> CeleryWorker:
        if self._process is None:
            raise RuntimeError("the worker has not been started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self._process.returncode}; "
                                   f"see {self.log_path}:\n{self.log_text()[-3000:]}")
            if " ready." in self.log_text():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"celery worker not ready after {timeout:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        """The worker's main process (what a health check or a signal is about)."""
        if self._process is None:
            raise RuntimeError("the worker has not been started")
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pool_pids(self) -> list[int]:
        """The main process's children (the prefork pool's processes), by pid."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as children:
                return sorted(int(pid) for pid in children.read().split())
        except OSError:  # exited
            return []

    def kill(self) -> int | None:
        """SIGKILL the main process and its pool processes at once, as the OOM killer or
        a killed container does: nothing runs a shutdown, held messages stay in flight."""
        if self._process is None:
            return None
        pool = self.pool_pids()
        for pid in [self._process.pid, *pool]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process.wait()
        # SIGKILL lands when the kernel next schedules each process: on a busy machine a
        # pool process can still show as running for a moment. Return once all are dead.
        deadline = time.monotonic() + 10
        while any(process_running(pid) for pid in pool) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._log.close()
        return self._process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int | None:
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        return self._process.returncode

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
