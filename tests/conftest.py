"""Shared fixtures and the suite's parallel plumbing. Tests that need the project root on
sys.path get it from here.

``make test`` runs the suite on several pytest-xdist workers (``-n``, ``--dist
loadgroup``). What is expensive or exclusive is shared by putting every test that uses
it on one worker: a test that uses the deployed ``stage`` (one CDK deploy per session)
or the container ``engine`` (one daemon per machine: its data root is locked) is put in
the group :data:`SHARED_WORKER` by :func:`pytest_collection_modifyitems`, whatever file
it is in. Those tests may pay the deploy or the image build in their setup, so their
timeout is :data:`SHARED_WORKER_TIMEOUT` unless they set one; every other test has the
default of ``pyproject.toml``.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from local_aws.stage import TASK_DEFINITION_CONTEXT, deploy_stage  # noqa: E402

SHARED_WORKER = "stage-and-engine"
SHARED_FIXTURES = {"stage", "engine"}
SHARED_WORKER_TIMEOUT = 900
"""Seconds: a CDK deploy (bootstrap included) and, on a fresh machine, the base and
worker images are built in the setup of the first test that needs them."""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SHARED_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group(SHARED_WORKER))
            item.add_marker(pytest.mark.timeout(SHARED_WORKER_TIMEOUT))


@pytest.fixture(scope="session")
def stage(tmp_path_factory):
    """One deployed stage (the real CDK CLI to moto with IAM enforcement) with the fleets,
    their scaling left out, for the e2e tests and the fleets' runtime alike."""
    deployed = deploy_stage(tmp_path_factory.mktemp("stage"), context=TASK_DEFINITION_CONTEXT)
    yield deployed
    deployed.moto.stop()
