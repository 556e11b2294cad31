"""``make demo``: deploy to a local AWS emulator, run a worker as the ECS task
role, send tasks as the producer role, print the results, stop everything.

    python -m demo [--transport bundled|stock]    (make demo TRANSPORT=stock)
"""

from __future__ import annotations

import argparse
import sys
import time

from demo.run import DemoFailed, run_demo
from local_aws.stage import PROJECT_ROOT, deploy_stage
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

    stage = deploy_stage(WORK_DIR, step=step)
    try:
        step(f"stack outputs written to {stage.outputs_file.relative_to(PROJECT_ROOT)}")
        run_demo(stage, WORK_DIR, step, transport=args.transport)
    except DemoFailed as error:
        step(f"FAILED: {error}")
        return 1
    finally:
        stage.moto.stop()
    step(f"emulator stopped; demo finished in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
