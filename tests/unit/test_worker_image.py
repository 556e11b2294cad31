"""How the worker image build is named and cached, without building it."""

from __future__ import annotations

import pytest

from local_aws import worker_image
from local_aws.worker_image import build_wheels, image_tag, tasks_module


def test_tasks_module_is_named_by_its_path():
    assert tasks_module("demo/tasks.py") == "demo.tasks"
    assert tasks_module("tasks.py") == "tasks"


@pytest.mark.parametrize("source", ["/abs/tasks.py", "../tasks.py", "demo/tasks.txt"])
def test_tasks_module_outside_the_project_is_refused(source):
    with pytest.raises(ValueError, match="must be a .py path inside the project"):
        tasks_module(source)


def test_tag_changes_with_what_the_image_is_made_of():
    tag = image_tag("celery-sqs-kit-base:bookworm", "demo/tasks.py")
    assert tag.startswith("celery-sqs-kit-worker:") and len(tag.split(":")[1]) == 12
    assert image_tag("celery-sqs-kit-base:bookworm", "demo/tasks.py") == tag
    assert image_tag("python:3.11-slim", "demo/tasks.py") != tag


def test_wheels_are_built_again_only_when_the_requirements_change(monkeypatch, tmp_path):
    calls = []

    class Done:
        returncode = 0

    def fake_pip(args, **kwargs):
        calls.append(args)
        return Done()

    monkeypatch.setattr(worker_image.subprocess, "run", fake_pip)
    requirements = tmp_path / "requirements-worker.txt"
    requirements.write_text("celery==5.7.0\n")
    out = tmp_path / "wheels"
    assert build_wheels(requirements, out) is True
    assert build_wheels(requirements, out) is False
    requirements.write_text("celery==5.7.0\nkombu==5.7.0\n")
    assert build_wheels(requirements, out) is True
    assert len(calls) == 2 and calls[0][1:4] == ["-m", "pip", "wheel"]
