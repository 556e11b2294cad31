"""Send one task to each queue and print each result as a JSON line.

Run as the producer role (``python -m demo.send``); results are read back from
the DynamoDB result backend.
"""

from __future__ import annotations

import json
import sys
import time

from demo.tasks import add, place_order, report, whoami


def main() -> int:
    sent = {
        "add(2, 3) -> celery": add.delay(2, 3),
        "whoami() -> celery": whoami.delay(),
        "report('q3') -> reports": report.delay("q3"),
        "place_order('o-1001', 2) -> orders.fifo [MessageGroupId=customer-42]":
            place_order.apply_async(("o-1001", 2), MessageGroupId="customer-42"),
    }
    started = time.monotonic()
    for label, result in sent.items():
        value = result.get(timeout=60)
        print(json.dumps({"task": label, "id": result.id, "state": result.state, "result": value,
                          "waited_s": round(time.monotonic() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
