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

The file's path is ``$CELERY_SQS_KIT_HEALTH_FILE`` (default
``/tmp/celery-sqs-kit-health.json``; one worker per container, or one path per
worker). Times are ``time.monotonic()``: one clock for every process on the
host (``docker exec`` shares the kernel), and immune to wall-clock steps.
Linux only (the process check reads ``/proc``). This module imports neither
Celery nor boto3, so a check costs a bare interpreter start.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEALTH_FILE_ENV = "CELERY_SQS_KIT_HEALTH_FILE"
DEFAULT_HEALTH_FILE = "/tmp/celery-sqs-kit-health.json"


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
    return Path(os.environ.get(HEALTH_FILE_ENV) or DEFAULT_HEALTH_FILE)


def write_state(path: Path, state: WorkerState) -> None:
    """Replace the file atomically, so a check never reads half a write."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(state)), encoding="utf-8")
    os.replace(partial, path)


def check(path: Path, now: float | None = None) -> tuple[bool, str]:
    """``(healthy, the one line to print)`` for the state file at ``path``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
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
    except (OSError, ValueError, TypeError, KeyError) as error:
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
    healthy, line = check(state_path())
    print(line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
