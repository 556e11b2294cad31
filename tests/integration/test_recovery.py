"""Recovery after kill -9, with the bundled transport's short visibility timeout (issue
11): a killed worker's task runs again on another worker once the window its heartbeat
last granted ends. Real ``celery worker`` processes on fauxqs; the scenario is the one
``python -m bench.recovery`` times (BENCHMARKS.md), at 10 s instead of the 60 s default
to keep the run short. That a healthy worker's task of three windows still runs once is
shown at 3 s (``test_bundled_transport``) and across a restart (``test_far_eta``)."""

from __future__ import annotations

import pytest

from bench.recovery import RecoveryFleet, kill_to_rerun

pytestmark = [pytest.mark.integration, pytest.mark.fault]

VISIBILITY = 10
"""Scaled down from the bundled default (60 s; the spec's minimum is 30 s, for a slow
heartbeat call on a real network): the runtime plans with whatever window it is given."""


@pytest.fixture
def fleet(fauxqs, tmp_path) -> RecoveryFleet:
    return RecoveryFleet(tmp_path, fauxqs.endpoint_url, transport="bundled",
                         visibility=VISIBILITY, task_time_limit=600)


def test_a_task_of_a_killed_worker_runs_again_on_another_worker(fleet):
    survivor = fleet.worker("b")
    try:
        # killed after the heartbeat extended the message (due with half the window left)
        kill_to_rerun(fleet, survivor, tag="killed", kill_after=VISIBILITY * 2 / 3)
        fleet.wait_for("done", "killed", worker="b", timeout=30)
        assert fleet.drained()  # acked on b: nothing left to come back
    finally:
        survivor.stop()
    assert [e.worker for e in fleet.events("start", "killed")] == ["a", "b"]

