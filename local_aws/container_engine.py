"""A container engine the project starts itself: Debian's ``docker.io``, no systemd.

    with ContainerEngine() as engine:
        engine.ensure_base_image()
        engine.docker("run", "--rm", "--network", "host", IMAGE, ...)

``dockerd`` runs as root on a private socket, with no bridge and no iptables
changes (``--bridge=none --iptables=false --ip-forward=false``), so every build
and run says ``--network host`` (or ``none``) and nothing on the host's network
changes. Images live in a data root kept across runs (:data:`STATE_DIR`), so
the base image is built once per machine and layers stay cached; the socket and
the daemon's run state live in a temporary directory removed at stop, after
unmounting what the daemon leaves mounted there (the ``nsfs`` of its network
namespace). A lock on the data root makes a second engine on the same machine
wait for the first to stop, since two daemons cannot share one; a daemon left
running by a run that died before stopping it is stopped by the next start.

No container registry is reachable from this machine kind, so the base image is
made from Debian packages (:data:`BASE_IMAGE`: ``mmdebstrap`` piped into ``docker
import``) and the worker image's ``BASE_IMAGE`` build argument names it.

``python -m local_aws.container_engine install`` installs the packages (``make
test`` runs it); where that cannot be done it prints one line saying why and exits 1:
the container tests need an engine. Only a caller who asked to go without one
(:data:`SKIP_VARIABLE` ``=1``, never honoured in CI, where ``CI=true``) gets exit 0, and
the container tests then skip with the reason :class:`EngineUnavailable` carries
(:func:`may_skip`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from runtime.health import process_running

PACKAGES = {"docker.io": "dockerd", "mmdebstrap": "mmdebstrap"}
"""Debian package -> the program the project runs from it."""
STATE_DIR = Path("/var/lib/celery-sqs-kit/container-engine")
BASE_IMAGE = "celery-sqs-kit-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
APT_SOURCES = Path("/etc/apt/sources.list.d")
DOCKER = "/usr/bin/docker"
"""docker.io's own client (20.10), matching the daemon: BuildKit works with it."""
STORAGE_DRIVERS = ("overlay2", "vfs")
"""overlay2 first; vfs (full copies, slower, always works) where the data root's
filesystem cannot hold overlay mounts."""


def debian_mirror(sources: Path = APT_SOURCES) -> str:
    """The Debian archive this machine's apt uses (the ``URIs:`` of the deb822 entry whose
    suites include bookworm): a machine behind another mirror or proxy keeps working, and
    no mirror host is written here."""
    for path in sorted(sources.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines()
                          if ":" in line and not line.lstrip().startswith("#"))
            suites = fields.get("Suites", "").split()
            uris = fields.get("URIs", "").split()
            if "bookworm" in suites and "deb" in fields.get("Types", "").split() and uris:
                return uris[0]
    raise RuntimeError(f"no apt source for Debian bookworm in {sources}/*.sources: the base "
                       "image is built from the machine's own Debian archive")


SKIP_VARIABLE = "KIT_SKIP_CONTAINERS"
"""Set to ``1`` to run without the container tests where no engine can be had."""


class EngineUnavailable(RuntimeError):
    """No container engine can be had here; the message says why, in one line."""


def may_skip(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a missing engine may skip the container tests rather than fail them: only
    when the caller asked (``KIT_SKIP_CONTAINERS=1``), and never in CI (``CI=true``),
    where the engine is required."""
    return environ.get(SKIP_VARIABLE) == "1" and environ.get("CI", "").lower() != "true"


def ensure_packages() -> list[str]:
    """Install the missing packages with apt (as root); return what was installed."""
    missing = [name for name in PACKAGES if not _installed(name)]
    if not missing:
        return []
    if os.geteuid() != 0:
        raise EngineUnavailable(f"{' '.join(missing)} not installed, and installing them "
                                "needs root")
    if shutil.which("apt-get") is None:
        raise EngineUnavailable(f"{' '.join(missing)} not installed, and there is no apt-get")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        retry = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if retry.returncode != 0:
            last = (retry.stderr.strip().splitlines() or ["no output"])[-1]
            raise EngineUnavailable(f"apt-get install {' '.join(missing)} failed: {last}")
    return missing


def _installed(package: str) -> bool:
    return shutil.which(PACKAGES[package]) is not None


class ContainerEngine:
    """A private ``dockerd``; :meth:`docker` runs the client against it."""

    def __init__(self, *, state_dir: Path = STATE_DIR, lock_timeout: float = 900) -> None:
        self.state_dir = state_dir
        self.lock_timeout = lock_timeout
        self.storage_driver: str | None = None
        self._run_dir: Path | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` of this engine."""
        if self._run_dir is None:
            raise RuntimeError("the container engine is not running")
        return f"unix://{self._run_dir / 'docker.sock'}"

    def start(self) -> ContainerEngine:
        ensure_packages()
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._stop_leftover()
        # A short path under /tmp: the daemon's unix sockets live under it.
        self._run_dir = Path(tempfile.mkdtemp(prefix="kit-engine-"))
        failures = []
        try:
            for driver in STORAGE_DRIVERS:
                failure = self._start_daemon(driver)
                if failure is None:
                    self.storage_driver = driver
                    break
                failures.append(f"{driver}: {failure}")
            else:
                raise EngineUnavailable("dockerd did not start: " + "; ".join(failures))
        except BaseException:
            self.stop()
            raise
        if failures:
            print(f"container engine: storage driver {self.storage_driver}, since "
                  f"{'; '.join(failures)}", file=sys.stderr)
        return self

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this engine; output captured as text."""
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}
        done = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False, **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed ({done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        return done

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def ensure_base_image(self, name: str = BASE_IMAGE) -> bool:
        """Build the Debian base image unless an image of that name exists; True if built."""
        if self.has_image(name):
            return False
        # stderr to a file, not a pipe: a full pipe would stall mmdebstrap mid-stream.
        with tempfile.TemporaryFile() as errors:
            strap = subprocess.Popen(
                ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}",
                 "bookworm", "-", debian_mirror()], stdout=subprocess.PIPE, stderr=errors)
            try:
                imported = self.docker("import", "-", name, stdin=strap.stdout, check=False)
            finally:
                strap.stdout.close()
                strap.wait()
            errors.seek(0)
            strap_error = errors.read().decode(errors="replace")
        if strap.returncode != 0 or imported.returncode != 0:
            raise RuntimeError(f"building {name} failed: mmdebstrap exited {strap.returncode} "
                               f"({strap_error.strip()[-1000:]}); docker import exited "
                               f"{imported.returncode} ({imported.stderr.strip()[-1000:]})")
        return True

    def stop(self) -> None:
        if self._daemon is not None and self._daemon.poll() is None:
            self._daemon.send_signal(signal.SIGTERM)
            try:
                self._daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait()
        self._daemon = None
        if self._run_dir is not None:
            _unmount_below(self._run_dir)
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
            (self.state_dir / "run-dir").unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> ContainerEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_lock(self) -> None:
        self._lock = open(self.state_dir / "engine.lock", "w")
        deadline = time.monotonic() + self.lock_timeout
        told = False
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise TimeoutError(f"another container engine held {self.state_dir} "
                                       f"for {self.lock_timeout:.0f} s") from None
                if not told:
                    print(f"container engine: waiting for the engine another process runs "
                          f"on {self.state_dir}", file=sys.stderr)
                    told = True
                time.sleep(1)

    def _stop_leftover(self) -> None:
        """Stop a daemon left running by a run that died before :meth:`stop` (it has no
        owner: this process holds the lock), and clear its run directory."""
        pidfile, note = self.state_dir / "dockerd.pid", self.state_dir / "run-dir"
        pid = int(pidfile.read_text().strip() or 0) if pidfile.exists() else 0
        if pid and _is_dockerd(pid):
            print(f"container engine: stopping dockerd {pid} left by an earlier run",
                  file=sys.stderr)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _is_dockerd(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _is_dockerd(pid):
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        if note.exists():
            _unmount_below(Path(note.read_text()))
            shutil.rmtree(note.read_text(), ignore_errors=True)
            note.unlink()

    def _start_daemon(self, driver: str) -> str | None:
        """Start dockerd with ``driver``; None once it answers, else why it did not."""
        run = self._run_dir
        (self.state_dir / "run-dir").write_text(str(run))
        log_path = run / f"dockerd-{driver}.log"
        with open(log_path, "wb") as log:
            self._daemon = subprocess.Popen(
                ["dockerd", "--host", self.host, "--data-root", str(self.state_dir / "data"),
                 "--exec-root", str(run / "exec"), "--pidfile", str(self.state_dir / "dockerd.pid"),
                 "--storage-driver", driver, "--iptables=false", "--ip-forward=false",
                 "--bridge=none"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                lines = log_path.read_text(errors="replace").strip().splitlines()
                _unmount_below(run)
                _unmount_below(self.state_dir / "data")
                return lines[-1] if lines else f"exited {self._daemon.returncode}"
            if _answers(run / "docker.sock"):
                return None
            time.sleep(0.1)
        self._daemon.kill()
        self._daemon.wait()
        _unmount_below(run)
        return "did not answer within 60 s"


def _answers(sock_path: Path) -> bool:
    """True once the daemon answers ``GET /_ping`` on its socket."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(sock_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def _is_dockerd(pid: int) -> bool:
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return name == "dockerd" and process_running(pid)


def _unmount_below(root: Path) -> None:
    """Unmount ``root`` and everything mounted under it, deepest first: the daemon's
    nsfs in its run directory, or the bind mount a failed storage driver leaves."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        points = [line.split()[4] for line in mounts]
    ours = [p for p in points if p == str(root) or p.startswith(f"{root}/")]
    for point in sorted(ours, key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m local_aws.container_engine install", file=sys.stderr)
        return 2
    try:
        installed = ensure_packages()
    except EngineUnavailable as reason:
        if may_skip():
            print(f"container engine: skipped ({reason}); {SKIP_VARIABLE}=1, so the "
                  "container tests will skip")
            return 0
        print(f"container engine: unavailable ({reason}); the container tests need it "
              f"(outside CI, {SKIP_VARIABLE}=1 skips them)", file=sys.stderr)
        return 1
    print(f"container engine: installed {' '.join(installed)}" if installed
          else "container engine: packages present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
