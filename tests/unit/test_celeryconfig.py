"""runtime.celeryconfig: the import-time configuration selects the transport the document
names, unless CELERY_SQS_KIT_TRANSPORT says otherwise, and refuses any other name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from local_aws.stage import PROJECT_ROOT
from tests.documents import document

PRINT_TRANSPORT = "import runtime.celeryconfig as c; print(c.broker_transport)"


def import_config(doc: dict, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_SQS_KIT")}
    environment.update(CELERY_SQS_KIT_CONFIG_JSON=json.dumps(doc), **env)
    return subprocess.run([sys.executable, "-c", PRINT_TRANSPORT], cwd=PROJECT_ROOT,
                          env=environment, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("named, env, expected", [
    pytest.param(None, {}, "runtime.transport:Transport", id="absent-means-bundled"),
    pytest.param("stock", {}, "sqs", id="the-documents-choice"),
    pytest.param("stock", {"CELERY_SQS_KIT_TRANSPORT": "bundled"}, "runtime.transport:Transport",
                 id="the-environment-wins"),
])
def test_import_time_config_selects_the_named_transport(named, env, expected):
    doc = document() if named is None else {**document(), "transport": named}
    result = import_config(doc, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_an_unknown_transport_in_the_environment_stops_in_one_line():
    result = import_config(document(), CELERY_SQS_KIT_TRANSPORT="kombu")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "celery-sqs-kit: $CELERY_SQS_KIT_TRANSPORT: must be one of ['bundled', 'stock'], "
        "got 'kombu'")
