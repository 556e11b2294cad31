"""runtime.config: every source, and every broken document, fails with file and field."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from runtime.config import ENV_DOCUMENT, ENV_SOURCE, load_config, parse_document
from runtime.errors import ConfigError
from tests.documents import document


def test_valid_document_loads_every_field():
    config = parse_document(document(), "doc.json")
    assert config.region == "us-east-1"
    assert config.default_queue == "celery"
    assert list(config.queues) == ["celery", "reports", "orders.fifo"]
    celery = config.queues["celery"]
    assert celery.backoff_policy == {1: 10, 2: 20}
    assert celery.dead_letter_queue.max_receive_count == 5
    assert config.queues["orders.fifo"].fifo is True
    assert config.result_backend.table == "results-table"
    assert config.sts is None and config.endpoint_url is None


def test_outputs_file_with_one_stack_is_read(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"Kit": {"WorkerConfig": json.dumps(document()),
                                        "TaskRoleArn": "arn:aws:iam::1:role/x"}}))
    assert load_config(str(path)).queues["celery"].url.endswith("/celery")


def test_outputs_file_with_two_stacks_needs_a_stack_name(tmp_path):
    path = tmp_path / "outputs.json"
    both = {"A": {"WorkerConfig": json.dumps(document())},
            "B": {"WorkerConfig": json.dumps(document())}}
    path.write_text(json.dumps(both))
    with pytest.raises(ConfigError, match=r"outputs.json: WorkerConfig: expected one stack.*\['A', 'B'\]"):
        load_config(str(path))
    assert load_config(f"{path}#B").source.endswith("#B")


def test_outputs_file_naming_an_unknown_stack_fails(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"A": {"WorkerConfig": json.dumps(document())}}))
    with pytest.raises(ConfigError, match=r"Nope.WorkerConfig: stack 'Nope' has no WorkerConfig"):
        load_config(f"{path}#Nope")


def test_inline_environment_document_wins(monkeypatch):
    monkeypatch.setenv(ENV_DOCUMENT, json.dumps(document()))
    monkeypatch.setenv(ENV_SOURCE, "/does/not/exist.json")
    assert load_config().source == f"${ENV_DOCUMENT}"


def test_environment_source_path_is_used(monkeypatch, tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document()))
    monkeypatch.delenv(ENV_DOCUMENT, raising=False)
    monkeypatch.setenv(ENV_SOURCE, str(path))
    assert load_config().source == str(path)


def test_no_source_at_all_says_what_to_set(monkeypatch):
    monkeypatch.delenv(ENV_DOCUMENT, raising=False)
    monkeypatch.delenv(ENV_SOURCE, raising=False)
    with pytest.raises(ConfigError, match=f"set {ENV_SOURCE}"):
        load_config()


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.json: file not found"):
        load_config(str(tmp_path / "missing.json"))


def test_truncated_file_names_the_file_and_position(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(document())[:120])
    with pytest.raises(ConfigError, match=r"doc.json: is not valid JSON \(truncated or edited\?\).*line 1 column"):
        load_config(str(path))


@mock_aws
def test_ssm_parameter_is_read(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("ssm").put_parameter(Name="/kit/config", Type="String",
                                      Value=json.dumps(document()))
    assert load_config("ssm:/kit/config").source == "ssm:/kit/config"


@mock_aws
def test_missing_ssm_parameter_says_what_to_check(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(ConfigError, match=r"ssm:/kit/none: SSM GetParameter failed \(ParameterNotFound\)"):
        load_config("ssm:/kit/none")


def _broken(mutate) -> dict:
    doc = document()
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda d: d.update(schema="something-else"), "schema", "must be 'celery-sqs-kit/worker-config'"),
    (lambda d: d.update(version=2), "version", "unknown version 2"),
    (lambda d: d.pop("queues"), "queues", "is missing"),
    (lambda d: d.update(queues={}), "queues", "must name at least one queue"),
    (lambda d: d["queues"]["celery"].pop("url"), "queues.celery.url", "is missing"),
    (lambda d: d["queues"]["celery"].update(url=""), "queues.celery.url", "is empty"),
    (lambda d: d["queues"]["celery"].update(visibility_timeout="1800"),
     "queues.celery.visibility_timeout", "must be int, got str"),
    (lambda d: d["queues"]["celery"].update(wait_time_seconds=25),
     "queues.celery.wait_time_seconds", "must be 0..20, got 25"),
    (lambda d: d["queues"]["celery"].update(fifo=True), "queues.celery.fifo", "must both end in '.fifo'"),
    (lambda d: d["queues"]["celery"].update(backoff_policy={"one": 10}),
     "queues.celery.backoff_policy", "must map attempt numbers"),
    (lambda d: d["queues"]["celery"]["dead_letter_queue"].pop("arn"),
     "queues.celery.dead_letter_queue.arn", "is missing"),
    (lambda d: d.update(default_queue="nope"), "default_queue", "'nope' is not one of the queues"),
    (lambda d: d.pop("region"), "region", "is missing"),
    (lambda d: d.update(sts={"token_timeout": 900}), "sts.role_arn", "is missing"),
    (lambda d: d["queues"]["celery"].update(secret_access_key="x"),
     "queues.celery.secret_access_key", "credentials do not belong"),
    (lambda d: d["result_backend"].pop("table"), "result_backend.table", "is missing"),
])
def test_broken_document_names_source_and_field(mutate, field, problem):
    with pytest.raises(ConfigError) as caught:
        parse_document(_broken(mutate), "outputs.json")
    assert caught.value.source == "outputs.json"
    assert caught.value.field == field
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"outputs.json: {field}: ")


def test_a_document_that_is_not_an_object_is_refused():
    with pytest.raises(ConfigError, match=r"doc: must be an object, got list"):
        parse_document([1, 2], "doc")
