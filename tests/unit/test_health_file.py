"""Where the health state file lives and how it is written and read (issue 19 item 8):
in a directory of the user's own, never through a link another local user planted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime import health, liveness
from runtime.errors import ConfigError
from runtime.health import HEALTH_FILE_ENV, WorkerState, check, state_path, write_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_health_env(monkeypatch, tmp_path):
    """No configured path, no XDG runtime directory, and a temporary directory of the
    test's own standing in for ``/tmp``."""
    monkeypatch.delenv(HEALTH_FILE_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def live_state() -> WorkerState:
    return WorkerState(pid=os.getpid(), refreshed=100.0, max_age=50)


# writing ---------------------------------------------------------------------------------
def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    """The old temporary name was predictable (``.health.json.<pid>``): a link there made
    the worker write its state into a file the planter chose."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "health.json"
    (tmp_path / f".health.json.{os.getpid()}").symlink_to(victim)
    write_state(path, live_state())
    assert victim.read_text() == "precious"
    assert not path.is_symlink()
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_link_planted_at_the_state_file_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "health.json"
    path.symlink_to(victim)
    write_state(path, live_state())
    assert victim.read_text() == "precious" and not path.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.json", "victim"]


# reading ---------------------------------------------------------------------------------
def test_the_check_does_not_follow_a_link_at_the_state_file(tmp_path):
    """A link to a state file that says healthy (one the planter keeps fresh) is not
    believed."""
    planted = tmp_path / "planted.json"
    write_state(planted, live_state())
    path = tmp_path / "health.json"
    path.symlink_to(planted)
    assert check(path, now=100.0) == (False, f"state file unreadable: {path}: a link "
                                             "(not followed)")


def test_the_check_does_not_believe_a_state_file_of_another_user(tmp_path, monkeypatch):
    path = tmp_path / "health.json"
    write_state(path, live_state())
    owner = os.stat(path).st_uid
    monkeypatch.setattr(health.os, "geteuid", lambda: owner + 1)
    healthy, line = check(path, now=100.0)
    assert not healthy
    assert line == (f"state file unreadable: {path}: belongs to uid {owner}, not to this "
                    f"user (uid {owner + 1}): not written by this user's worker")


# where it lives ----------------------------------------------------------------------------
def test_without_a_configured_path_the_file_is_in_a_private_directory_of_the_user(
        no_health_env):
    path = state_path()
    assert path == no_health_env / f"celery-sqs-kit-{os.geteuid()}" / "health.json"
    assert stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700
    assert state_path() == path  # the directory made before is accepted


def test_the_xdg_runtime_directory_is_preferred(no_health_env, monkeypatch):
    runtime_dir = no_health_env / "run-user"
    runtime_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    assert state_path() == runtime_dir / "celery-sqs-kit" / "health.json"


def test_a_configured_path_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv(HEALTH_FILE_ENV, "/tmp/celery-sqs-kit-health.json")
    assert state_path() == Path("/tmp/celery-sqs-kit-health.json")


def test_a_directory_of_another_user_is_refused(no_health_env, monkeypatch):
    owner = os.geteuid()
    monkeypatch.setattr(health.os, "geteuid", lambda: owner + 1)
    (no_health_env / f"celery-sqs-kit-{owner + 1}").mkdir(mode=0o700)  # made by uid owner
    with pytest.raises(ConfigError, match=rf"belongs to uid {owner}, not to this user "
                                          rf"\(uid {owner + 1}\): another user may have made it"):
        state_path()


def test_a_directory_open_to_others_is_refused(no_health_env):
    directory = no_health_env / f"celery-sqs-kit-{os.geteuid()}"
    directory.mkdir()
    directory.chmod(0o755)
    with pytest.raises(ConfigError, match="has mode 0755, open to other users"):
        state_path()


def test_a_link_at_the_directory_is_refused(no_health_env):
    elsewhere = no_health_env / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (no_health_env / f"celery-sqs-kit-{os.geteuid()}").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"is not a directory \(a link\?\)"):
        state_path()


def test_the_command_says_why_it_refused_the_directory(tmp_path):
    directory = tmp_path / f"celery-sqs-kit-{os.geteuid()}"
    directory.mkdir()
    directory.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k not in (HEALTH_FILE_ENV, "XDG_RUNTIME_DIR")}
    done = subprocess.run([sys.executable, "-m", "runtime.health"], capture_output=True,
                          text=True, env={**env, "TMPDIR": str(tmp_path)}, cwd=ROOT, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith(f"state file refused: {directory}: the health state's "
                                  "directory has mode 0777, open to other users")


def test_a_worker_whose_directory_is_refused_keeps_no_file_and_says_why(no_health_env, caplog):
    directory = no_health_env / f"celery-sqs-kit-{os.geteuid()}"
    directory.mkdir()
    directory.chmod(0o775)
    with caplog.at_level("ERROR", logger="runtime.liveness"):
        liveness._on_worker_ready(SimpleNamespace(hub=object()))
    assert "no health state is kept" in caplog.text and "has mode 0775" in caplog.text
    assert list(directory.iterdir()) == []


# the worker image keeps its own path -------------------------------------------------------
def test_the_image_s_path_is_the_one_its_read_only_root_lets_it_write():
    from infra.constructs.worker_runtime import SCRATCH_PATH

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"{HEALTH_FILE_ENV}={health.IMAGE_HEALTH_FILE}" in dockerfile
    assert SCRATCH_PATH == str(Path(health.IMAGE_HEALTH_FILE).parent) == "/tmp"
