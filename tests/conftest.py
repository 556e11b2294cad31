"""Shared fixtures and the suite's parallel plumbing. Tests that need the project root on
sys.path get it from here.

``make test`` runs the suite on several pytest-xdist workers (``-n``). What is expensive
or exclusive is shared by running every test that uses it on one worker: a test that
uses the deployed ``stage`` (one CDK deploy per session) or the container ``engine`` (one
daemon per machine: its data root is locked) is in the unit :data:`SHARED_WORKER`,
whatever file it is in (:func:`pytest_collection_modifyitems` finds them by their
fixtures, :class:`SharedWorkerScheduling` keeps them together; xdist's own
``--dist loadgroup`` cannot: it renames node ids in a way pytest 9 ignores). Those tests
may pay the deploy or the image build in their setup, so their timeout is
:data:`SHARED_WORKER_TIMEOUT` unless they set one; every other test has the default of
``pyproject.toml``.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_WORKER = "stage-and-engine"
SHARED_FIXTURES = {"stage", "engine"}
SHARED_WORKER_TIMEOUT = 900
"""Seconds: a CDK deploy (bootstrap included) and, on a fresh machine, the base and
worker images are built in the setup of the first test that needs them."""
ONE_WORKER_FILES = ("tests/unit/test_scanners.py",)
"""Files whose module fixtures are the expensive part (one checkov and one cfn-lint run
over every template): their tests run on one worker, so each fixture runs once."""
_SHARED_IDS = "kit_shared_ids_dir"
"""The worker input naming the directory where each worker lists the shared tests."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shared = [item for item in items if SHARED_FIXTURES & set(item.fixturenames)]
    for item in shared:
        item.add_marker(pytest.mark.timeout(SHARED_WORKER_TIMEOUT))
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: tell the controller's scheduler
        listing = Path(workerinput[_SHARED_IDS], workerinput["workerid"])
        listing.write_text("".join(f"{item.nodeid}\n" for item in shared))


def pytest_configure_node(node) -> None:
    node.workerinput[_SHARED_IDS] = node.config.stash.setdefault(
        _shared_ids_key, tempfile.mkdtemp(prefix="kit-shared-tests-"))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    return SharedWorkerScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    listings = config.stash.get(_shared_ids_key, None)
    if listings is not None:
        shutil.rmtree(listings, ignore_errors=True)


_shared_ids_key = pytest.StashKey[str]()


class SharedWorkerScheduling(LoadScopeScheduling):
    """xdist's load scheduling test by test, except that the tests the workers listed as
    shared form one unit, run by one worker, and so does each of :data:`ONE_WORKER_FILES`. Scopes are asked for only once every
    worker has collected, so every listing is written by then."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        self._shared: set[str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._shared is None:
            listings = Path(self.config.stash[_shared_ids_key]).iterdir()
            self._shared = {line for listing in listings
                            for line in listing.read_text().splitlines()}
        if nodeid in self._shared:
            return SHARED_WORKER
        path = nodeid.split("::", 1)[0]
        return path if path in ONE_WORKER_FILES else nodeid


@pytest.fixture(scope="session")
def stage(tmp_path_factory):
    """One deployed stage (the real CDK CLI to moto with IAM enforcement) with the fleets,
    their scaling left out, for the e2e tests and the fleet runtime alike."""
    from local_aws.stage import TASK_DEFINITION_CONTEXT, deploy_stage  # only where deployed

    deployed = deploy_stage(tmp_path_factory.mktemp("stage"), context=TASK_DEFINITION_CONTEXT)
    yield deployed
    deployed.moto.stop()
