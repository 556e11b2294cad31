"""Servers on loopback for integration tests, always stopped."""

from __future__ import annotations

import pytest

from local_aws.moto_server import MotoServer


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server
