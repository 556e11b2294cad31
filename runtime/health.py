"""Is this worker alive? ``python -m runtime.health``: the worker image's HEALTHCHECK.

It asks the worker process, never the broker: an SQS outage is no reason to
replace healthy workers, and a check that called SQS would cost requests and
need its own permissions. Nor does it use Celery's remote control (``inspect
ping``): SQS has no broadcast, and the kit turns remote control off.

The worker keeps a small state file (:mod:`runtime.liveness` writes it from a
timer on the consumer's event loop): its main process id, when the loop last
ran the timer, and how old that may get. This command reads it and exits 0 with
one line (``healthy: ...``), or 1 with one line on stderr naming the part that
failed:

- ``state file missing``: the worker is not ready yet (the image's HEALTHCHECK
  start period covers that), or its app does not install the kit's worker hooks
  (``runtime.celeryconfig`` or a rendered bundled ``celeryconfig.py`` do);
- ``worker process not running``: the recorded main process is gone (or a zombie);
- ``consumer loop stale``: the process lives but its event loop has not run for
  longer than the bound, so it receives and acknowledges nothing (hung, stopped,
  or stuck reconnecting);
- ``pool process not running``: one of the pool's processes recorded at the last
  refresh is gone (the pool has not replaced it, or the loop that would is stuck);
- ``receives failing``: every receive since some time longer ago than the bound
  failed (credentials lost or expired, access denied, SQS unreachable); the line
  names the last error. A worker whose prefetch window is full makes no receive
  and is not flagged: only failures count, never their absence.

The file's path is ``$CELERY_SQS_KIT_HEALTH_FILE`` (one worker per container, or
one path per worker). The worker image sets it to :data:`IMAGE_HEALTH_FILE`, in the
container's own ``/tmp`` (a tmpfs or scratch volume no one else writes). Unset, as
for a worker run as a plain process, it is ``health.json`` in a directory of the
user's own: ``$XDG_RUNTIME_DIR/celery-sqs-kit``, else ``/tmp/celery-sqs-kit-<uid>``,
made with mode 0700 and refused (the check fails, the worker keeps no file and logs
why) when it is a link, belongs to another user or is open to others: in a shared
``/tmp``, another user who made the file or directory first would decide the verdict.
The file is written through a temporary file of a fresh random name (``O_EXCL``), then
renamed over the state file (a link planted there is replaced, never followed); the
check opens it without following links and only believes a file of its own user.
Times are ``time.monotonic()``: one clock for every process on the
host (``docker exec`` shares the kernel), and immune to wall-clock steps.
Linux only (the process check reads ``/proc``). This module imports neither
Celery nor boto3, so a check costs a bare interpreter start.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEALTH_FILE_ENV = "CELERY_SQS_KIT_HEALTH_FILE"
IMAGE_HEALTH_FILE = "/tmp/celery-sqs-kit-health.json"
"""Where the worker image (``Dockerfile``) puts the file: the container's own ``/tmp``,
the one path its read-only root lets it write (``infra.constructs.worker_runtime``)."""
STATE_FILE_NAME = "health.json"
PRIVATE_DIR_NAME = "celery-sqs-kit"
"""The default file's directory under ``$XDG_RUNTIME_DIR`` (``/tmp/celery-sqs-kit-<uid>``
without it)."""


@dataclass(frozen=True)
class WorkerState:
    """What the worker records: ``refreshed`` is a ``time.monotonic()`` reading,
    ``max_age`` the seconds after which that reading counts as stale."""

    pid: int
    refreshed: float
    max_age: float
    pool_pids: tuple[int, ...] = ()
    receive_failing_since: float | None = None
    last_receive_error: str = ""


def state_path() -> Path:
    """``$CELERY_SQS_KIT_HEALTH_FILE``, else the file in the user's private directory
    (made if missing); raises :class:`~runtime.errors.ConfigError` when that directory
    is not private."""
    configured = os.environ.get(HEALTH_FILE_ENV)
    if configured:
        return Path(configured)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    directory = Path(runtime_dir) / PRIVATE_DIR_NAME if runtime_dir else \
        Path(tempfile.gettempdir()) / f"{PRIVATE_DIR_NAME}-{os.geteuid()}"
    return private_dir(directory) / STATE_FILE_NAME


def private_dir(directory: Path) -> Path:
    """``directory``, made with mode 0700 if missing; refused unless it is a directory
    (not a link to one) of this user's that no one else may enter."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a link?)"
    elif info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    elif stat.S_IMODE(info.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, open to other users"
    if problem is not None:
        from runtime.errors import ConfigError  # here: the check imports no kombu otherwise

        raise ConfigError(str(directory), "", f"the health state's directory {problem}: "
                          "another user may have made it to decide the health verdict; "
                          f"remove it, or set ${HEALTH_FILE_ENV} to a file in a directory "
                          "of your own")
    return directory


def write_state(path: Path, state: WorkerState) -> None:
    """Replace the file atomically, so a check never reads half a write: written to a
    new file of a random name (``O_EXCL``: nothing there is followed or reused), then
    renamed over ``path``, which replaces whatever is there, a link included."""
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(asdict(state)))
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def read_state_text(path: Path) -> str:
    """The file's text, opened without following a link, if this user wrote it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, encoding="utf-8") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_uid != os.geteuid():
            raise ValueError(f"belongs to uid {info.st_uid}, not to this user "
                             f"(uid {os.geteuid()}): not written by this user's worker")
        return file.read()


def check(path: Path, now: float | None = None) -> tuple[bool, str]:
    """``(healthy, the one line to print)`` for the state file at ``path``."""
    try:
        raw = json.loads(read_state_text(path))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        failing = raw.get("receive_failing_since")
        state = WorkerState(pid=int(raw["pid"]), refreshed=float(raw["refreshed"]),
                            max_age=float(raw["max_age"]),
                            pool_pids=tuple(int(p) for p in raw.get("pool_pids", ())),
                            receive_failing_since=None if failing is None else float(failing),
                            last_receive_error=str(raw.get("last_receive_error", "")))
    except FileNotFoundError:
        return False, (f"state file missing: {path} (worker not ready yet, or its app "
                       "does not install the kit's worker hooks: runtime.celeryconfig or "
                       "a rendered bundled celeryconfig.py)")
    except OSError as error:
        if error.errno == errno.ELOOP:
            return False, f"state file unreadable: {path}: a link (not followed)"
        return False, f"state file unreadable: {path}: {error}"
    except (ValueError, TypeError, KeyError) as error:
        return False, f"state file unreadable: {path}: {error}"
    if not process_running(state.pid):
        return False, f"worker process not running: pid {state.pid} (from {path})"
    now = time.monotonic() if now is None else now
    age = now - state.refreshed
    if age > state.max_age:
        return False, (f"consumer loop stale: last ran {age:.0f} s ago, bound "
                       f"{state.max_age:.0f} s (pid {state.pid})")
    dead = [pid for pid in state.pool_pids if not process_running(pid)]
    if dead:
        return False, f"pool process not running: pid {dead[0]} (worker pid {state.pid})"
    if state.receive_failing_since is not None:
        failing = now - state.receive_failing_since
        if failing > state.max_age:
            return False, (f"receives failing for {failing:.0f} s, bound {state.max_age:.0f} s: "
                           f"{state.last_receive_error}")
    return True, (f"healthy: pid {state.pid}, consumer loop ran {age:.1f} s ago, "
                  f"{len(state.pool_pids)} pool process(es)")


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a killed child its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def main() -> int:
    try:
        path = state_path()
    except Exception as error:  # ConfigError (not imported up front: see private_dir), OSError
        print(f"state file refused: {error}", file=sys.stderr)
        return 1
    healthy, line = check(path)
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
