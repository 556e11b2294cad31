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


def test_install_command_fails_in_one_line_when_it_cannot(monkeypatch, capsys,
                                                          missing_packages):
    """Issue 20: it exited 0 here, and the container tests skipped in a green run."""
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("KIT_SKIP_CONTAINERS", raising=False)
    assert container_engine.main(["install"]) == 1
    assert capsys.readouterr().err == (
        "container engine: unavailable (docker.io mmdebstrap not installed, and installing "
        "them needs root); the container tests need it (outside CI, KIT_SKIP_CONTAINERS=1 "
        "skips them)\n")


def test_install_command_succeeds_without_an_engine_only_when_asked(monkeypatch, capsys,
                                                                    missing_packages):
    monkeypatch.setattr(container_engine.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("KIT_SKIP_CONTAINERS", "1")
    monkeypatch.delenv("CI", raising=False)
    assert container_engine.main(["install"]) == 0
    assert capsys.readouterr().out == (
        "container engine: skipped (docker.io mmdebstrap not installed, and installing them "
        "needs root); KIT_SKIP_CONTAINERS=1, so the container tests will skip\n")


@pytest.mark.parametrize("environ, skip", [
    ({}, False),
    ({"KIT_SKIP_CONTAINERS": "1"}, True),
    ({"KIT_SKIP_CONTAINERS": "0"}, False),
    ({"KIT_SKIP_CONTAINERS": "1", "CI": "true"}, False),  # CI requires the engine
    ({"CI": "true"}, False),
])
def test_a_missing_engine_may_skip_only_where_the_caller_asked_and_never_in_ci(environ, skip):
    assert container_engine.may_skip(environ) is skip


def test_the_base_image_comes_from_the_machine_s_own_debian_archive(tmp_path):
    (tmp_path / "other.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/ubuntu\nSuites: jammy\nComponents: main\n")
    (tmp_path / "debian.sources").write_text(
        "Types: deb\n# a comment: with a colon\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert container_engine.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_debian_source_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="no apt source for Debian bookworm"):
        container_engine.debian_mirror(tmp_path)
