"""Build the worker image (the repository's ``Dockerfile``) on a :class:`ContainerEngine`.

    python -m local_aws.worker_image [--base IMAGE] [--tasks demo/tasks.py]    # make image

Wheels are built on the host from ``requirements-worker.txt`` into
``.build/wheels`` (rebuilt only when the requirements change), since pip inside
a build has none of the host's index, wheel-dir or CA settings; the build then
runs with ``--network none``, proving it needs no network. The tag is a digest
of everything the image is made from (Dockerfile, requirements, runtime, tasks
module, base), so an unchanged tree names the same image and a task definition
that references the tag changes exactly when the image does.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from local_aws.container_engine import BASE_IMAGE, ContainerEngine, EngineUnavailable
from local_aws.server_process import PROJECT_ROOT

REPOSITORY = "celery-sqs-kit-worker"
REQUIREMENTS = PROJECT_ROOT / "requirements-worker.txt"
WHEELS_DIR = PROJECT_ROOT / ".build" / "wheels"
DEFAULT_TASKS = "demo/tasks.py"
_WHEELS_STAMP = ".requirements.sha256"


@dataclass(frozen=True)
class WorkerImage:
    tag: str
    tasks_module: str
    size_bytes: int
    build_seconds: float

    def summary(self) -> str:
        return (f"{self.tag} ({self.tasks_module}): {self.size_bytes / 1e6:.0f} MB, "
                f"built in {self.build_seconds:.1f} s")


def build_wheels(requirements: Path = REQUIREMENTS, out: Path = WHEELS_DIR) -> bool:
    """Wheels for every pinned requirement into ``out``; False when they were already there."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = out / _WHEELS_STAMP
    if stamp.exists() and stamp.read_text() == digest:
        return False
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                            "--disable-pip-version-check", "--wheel-dir", str(out),
                            "--requirement", str(requirements)],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"pip wheel -r {requirements.name} failed: {built.stderr[-2000:]}")
    stamp.write_text(digest)
    return True


def tasks_module(tasks_source: str) -> str:
    """``demo/tasks.py`` -> ``demo.tasks``: the image keeps the file's path, hence its name."""
    path = Path(tasks_source)
    if path.is_absolute() or path.suffix != ".py" or ".." in path.parts:
        raise ValueError(f"the tasks module must be a .py path inside the project, "
                         f"got {tasks_source!r}")
    return ".".join(path.with_suffix("").parts)


def image_tag(base_image: str, tasks_source: str) -> str:
    inputs = [PROJECT_ROOT / "Dockerfile", PROJECT_ROOT / ".dockerignore", REQUIREMENTS,
              PROJECT_ROOT / tasks_source, *sorted((PROJECT_ROOT / "runtime").glob("*.py"))]
    digest = hashlib.sha256(f"{base_image}\n{tasks_source}\n".encode())
    for path in inputs:
        digest.update(f"{path.relative_to(PROJECT_ROOT)}\n".encode() + path.read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def build_image(engine: ContainerEngine, *, base_image: str = BASE_IMAGE,
                tasks_source: str = DEFAULT_TASKS) -> WorkerImage:
    module = tasks_module(tasks_source)
    build_wheels()
    tag = image_tag(base_image, tasks_source)
    started = time.monotonic()
    engine.docker("build", "--network", "none", "--build-arg", f"BASE_IMAGE={base_image}",
                  "--build-arg", f"TASKS_SOURCE={tasks_source}",
                  "--build-arg", f"TASKS_MODULE={module}", "--tag", tag, str(PROJECT_ROOT))
    seconds = time.monotonic() - started
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    return WorkerImage(tag=tag, tasks_module=module, size_bytes=size, build_seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws.worker_image",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=BASE_IMAGE,
                        help=f"base image (default {BASE_IMAGE}, built here from Debian)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS,
                        help=f"tasks module source, relative to the project (default "
                             f"{DEFAULT_TASKS})")
    args = parser.parse_args(argv)
    try:
        with ContainerEngine() as engine:
            if args.base == BASE_IMAGE and engine.ensure_base_image():
                print(f"base image {BASE_IMAGE} built from Debian packages")
            print(build_image(engine, base_image=args.base, tasks_source=args.tasks).summary())
    except EngineUnavailable as reason:
        print(f"worker image: no container engine here: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
