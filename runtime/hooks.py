"""The kit's worker hooks, installed by every configuration that selects the bundled
transport: ``runtime.celeryconfig`` when it is imported, and a rendered
``celeryconfig.py`` (``runtime.render``) by its last lines.

- :mod:`runtime.liveness`: the state file ``python -m runtime.health`` checks;
- :mod:`runtime.metrics`: per-queue CloudWatch EMF lines on stdout;
- :mod:`runtime.scale_in`: ECS task scale-in protection while tasks run (only where
  ``ECS_AGENT_URI`` is set);
- :mod:`runtime.revocation`: ``revoke()`` through the result table, read by every worker.

Each connects to Celery's signals once, so installing twice changes nothing.
"""

from __future__ import annotations

from runtime import liveness, metrics, revocation, scale_in


def install() -> None:
    liveness.install()
    metrics.install()
    scale_in.install()
    revocation.install()
