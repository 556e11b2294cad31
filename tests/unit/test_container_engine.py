"""Where no container engine can be had, the reason is one line (tests skip with it, and
``make test`` prints it); nothing is attempted that cannot work."""

from __future__ import annotations

import pytest

from local_aws import container_engine
from local_aws.container_engine import ContainerEngine, EngineUnavailable


@pytest.fixture
def missing_packages(monkeypatch):
    monkeypatch.setattr(container_engine, "_installed", lambda name: False)
    monkeypatch.setattr(container_engine.subprocess, "run", _no_commands)


def _no_commands(*args, **kwargs):
    raise AssertionError(f"ran {args[0]}")


def test_missing_packages_without_root_is_a_reason(monkeypatch, missing_packages):
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 1000)
    with pytest.raises(EngineUnavailable, match=r"^docker.io mmdebstrap not installed, and "
                                                r"installing them needs root$"):
        container_engine.ensure_packages()


def test_missing_packages_without_apt_is_a_reason(monkeypatch, missing_packages):
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 0)
    monkeypatch.setattr(container_engine.shutil, "which", lambda name: None)
    with pytest.raises(EngineUnavailable, match="there is no apt-get$"):
        container_engine.ensure_packages()


def test_engine_without_root_is_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(container_engine, "_installed", lambda name: True)
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 1000)
    with pytest.raises(EngineUnavailable, match="^dockerd needs root$"):
        ContainerEngine(state_dir=tmp_path).start()


def test_install_command_prints_one_line_and_succeeds_when_it_cannot(monkeypatch, capsys,
                                                                     missing_packages):
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 1000)
    assert container_engine.main(["install"]) == 0
    assert capsys.readouterr().out == (
        "container engine: skipped (docker.io mmdebstrap not installed, and installing them "
        "needs root); the container tests will skip\n")
