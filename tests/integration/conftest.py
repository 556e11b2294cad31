"""Servers on loopback for integration tests, and the container engine; always stopped.
(The deployed ``stage`` is in tests/conftest.py: the e2e tests share it.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_aws.container_engine import (SKIP_VARIABLE, ContainerEngine,
                                         EngineUnavailable, may_skip)
from local_aws.fauxqs import FauxqsServer
from local_aws.moto_server import MotoServer


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module")
def fauxqs(tmp_path_factory):
    with FauxqsServer(log_path=tmp_path_factory.mktemp("fauxqs") / "fauxqs.log") as server:
        yield server


@pytest.fixture(scope="session")
def engine() -> Iterator[ContainerEngine]:
    """The project's own container engine, one per session (the tests that use it share a
    worker: tests/conftest.py). Where none can be started the test fails, saying why,
    unless the caller asked to skip (``KIT_SKIP_CONTAINERS=1``, outside CI)."""
    try:
        engine = ContainerEngine().start()
    except EngineUnavailable as reason:
        if may_skip():
            pytest.skip(f"no container engine here ({reason}), and {SKIP_VARIABLE}=1")
        pytest.fail(f"no container engine here: {reason} (outside CI, {SKIP_VARIABLE}=1 "
                    "skips the container tests)")
    try:
        yield engine
    finally:
        engine.stop()
