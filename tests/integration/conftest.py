"""Servers on loopback for integration tests, and the container engine; always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_aws.container_engine import ContainerEngine, EngineUnavailable
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


@pytest.fixture(scope="module")
def engine() -> Iterator[ContainerEngine]:
    """The project's own container engine; skips, saying why, where none can be started."""
    try:
        engine = ContainerEngine().start()
    except EngineUnavailable as reason:
        pytest.skip(f"no container engine here: {reason}")
    try:
        yield engine
    finally:
        engine.stop()
