"""The kit's worker hooks, installed by ``runtime.celeryconfig`` when it is imported
(whichever transport it selects), and by a rendered ``celeryconfig.py``
(``runtime.render``) in its last lines when it selects the bundled transport (the
stock rendering is settings only).

- :mod:`runtime.liveness`: the state file ``python -m runtime.health`` checks;
- :mod:`runtime.metrics`: per-queue CloudWatch EMF lines on stdout;
- :mod:`runtime.scale_in`: ECS task scale-in protection while tasks run (only where
  ``ECS_AGENT_URI`` is set);
- :mod:`runtime.revocation`: ``revoke()`` through the revocations table, read by every worker.

Each connects to Celery's signals once, so installing twice changes nothing.
"""

from __future__ import annotations

from runtime import liveness, metrics, revocation, scale_in


def install() -> None:
    liveness.install()
    metrics.install()
    scale_in.install()
    revocation.install()
