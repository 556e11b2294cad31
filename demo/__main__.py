"""``make demo``: deploy to a local AWS emulator, run a worker as the ECS task
role, send tasks as the producer role, print the results, stop everything.

Where a container engine can be started (root and apt: :mod:`local_aws.container_engine`),
the stage is deployed with its fleets (their scaling left out, which the emulator
lacks) and the ECS worker is the worker image, run as the deployed task definition
says, beside an EC2 worker authenticated through the instance metadata stand-in
(:mod:`demo.fleets`). Elsewhere, and with ``--transport stock`` (the task definition
says bundled), one line says why and the worker is a process as the task role.

    python -m demo [--transport bundled|stock]    (make demo TRANSPORT=stock)
"""

from __future__ import annotations

import argparse
import sys
import time

from demo.fleets import run_fleets_demo
from demo.run import DemoFailed, run_demo
from local_aws.container_engine import ContainerEngine, EngineUnavailable
from local_aws.stage import PROJECT_ROOT, TASK_DEFINITION_CONTEXT, Step, deploy_stage
from runtime.render import TRANSPORTS

WORK_DIR = PROJECT_ROOT / ".build" / "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="bundled",
                        help="the worker's transport (default: the kit's bundled one)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    engine = container_engine(args.transport, step)
    try:
        stage = deploy_stage(WORK_DIR, step=step,
                             context=None if engine is None else TASK_DEFINITION_CONTEXT)
        try:
            step(f"stack outputs written to {stage.outputs_file.relative_to(PROJECT_ROOT)}")
            if engine is None:
                run_demo(stage, WORK_DIR, step, transport=args.transport)
            else:
                run_fleets_demo(stage, engine, WORK_DIR, step)
        except DemoFailed as error:
            step(f"FAILED: {error}")
            return 1
        finally:
            stage.moto.stop()
    finally:
        if engine is not None:
            engine.stop()
    step(f"emulator stopped; demo finished in {time.monotonic() - started:.1f} s")
    return 0


def container_engine(transport: str, step: Step) -> ContainerEngine | None:
    """A started engine for the worker image, or None after one line saying why not."""
    if transport != "bundled":
        step(f"worker as a process: the task definition runs the bundled transport, not "
             f"{transport}")
        return None
    try:
        engine = ContainerEngine().start()
    except EngineUnavailable as reason:
        step(f"worker as a process, not in the image: no container engine here ({reason})")
        return None
    step(f"container engine started (dockerd, storage driver {engine.storage_driver})")
    return engine


if __name__ == "__main__":
    sys.exit(main())
