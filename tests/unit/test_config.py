"""runtime.config: every source, and every broken document, fails with file and field."""

from __future__ import annotations

import json
from dataclasses import fields

import boto3
import pytest
from moto import mock_aws

from runtime.config import (ENV_DOCUMENT, ENV_SOURCE, DeadLetterConfig, QueueConfig,
                            ResultBackendConfig, RevocationsConfig, StsConfig, WorkerConfig,
                            load_config, parse_document)
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
    assert config.revocations.table == "revocations-table"
    assert config.sts is None and config.endpoint_url is None


def test_a_document_from_before_the_revocations_table_loads_without_one():
    doc = document()
    del doc["revocations"]
    assert parse_document(doc, "doc.json").revocations is None


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
    (lambda d: d["queues"]["celery"].pop("url"), "queues.celery.url", "is missing"),
    (lambda d: d["queues"]["celery"].update(url=""), "queues.celery.url", "is empty"),
    (lambda d: d["queues"]["celery"]["dead_letter_queue"].pop("arn"),
     "queues.celery.dead_letter_queue.arn", "is missing"),
    (lambda d: d.pop("region"), "region", "is missing"),
    (lambda d: d.update(sts={"role_arn": "arn:aws:iam::123456789012:role/b"}), "sts.token_timeout",
     "is missing"),
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


ROLE = "arn:aws:iam::123456789012:role/broker"


def full_document() -> dict:
    """``document()`` with every optional field set, so that each can be broken."""
    doc = document()
    doc.update(transport="bundled", endpoint_url="https://sqs.us-east-1.amazonaws.com",
               sts={"role_arn": ROLE, "token_timeout": 900, "external_id": "fleet-7"})
    doc["queues"]["celery"]["sts_role_arn"] = ROLE
    doc["queues"]["celery"]["max_message_bytes"] = 1_048_576
    return doc


# (path in the document, bad value, rule text): the field is the path joined with dots;
# ("queues", NAME) renames the celery queue to NAME.
BAD_VALUES = [
    (("region",), "us east 1", "must be an AWS region name such as eu-west-1"),
    (("endpoint_url",), "localhost:4566", "must be an http:// or https:// URL"),
    (("transport",), "kombu", "must be one of ['bundled', 'stock']"),
    (("default_queue",), "nope", "is not one of the queues ['celery', 'orders.fifo', 'reports']"),
    (("queues",), {}, "must name at least one queue"),
    (("sts",), "broker", "must be an object, got str"),
    (("result_backend",), ["results-table"], "must be an object, got list"),
    (("queues", "celery.v2"), "celery.v2", "must be a queue name kombu looks up"),
    (("queues", "celery", "url"), "sqs/celery", "must be an http:// or https:// URL"),
    (("queues", "celery", "arn"), "celery", "must be an SQS queue ARN"),
    (("queues", "celery", "fifo"), True, "must both end in '.fifo' exactly when fifo is true"),
    (("queues", "celery", "visibility_timeout"), "1800", "must be int, got str"),
    (("queues", "celery", "visibility_timeout"), 43_201, "must be 0..43200 seconds"),
    (("queues", "celery", "wait_time_seconds"), 25, "must be 0..20 seconds"),
    (("queues", "celery", "task_time_limit"), 0, "must be 1..43200 seconds"),
    (("queues", "celery", "max_countdown"), -1, "must be 0..43200 seconds"),
    (("queues", "celery", "max_message_bytes"), 1_048_577, "must be 1024..1048576 bytes"),
    (("queues", "celery", "max_message_bytes"), "1MiB", "must be int, got str"),
    (("queues", "celery", "dead_letter_queue"), "celery-dlq", "must be an object, got str"),
    (("queues", "celery", "backoff_policy"), {"one": 10}, "must map attempt numbers to seconds"),
    (("queues", "celery", "backoff_tasks"), "app.tasks.flaky", "must be a list of strings"),
    (("queues", "celery", "routes"), [7], "must be a list of strings"),
    (("queues", "celery", "sts_role_arn"), "broker", "must be an IAM role ARN"),
    (("queues", "celery", "dead_letter_queue", "url"), "celery-dlq",
     "must be an http:// or https:// URL"),
    (("queues", "celery", "dead_letter_queue", "arn"), "arn:aws:sns:us-east-1:1:topic",
     "must be an SQS queue ARN"),
    (("queues", "celery", "dead_letter_queue", "max_receive_count"), 0, "must be 1..1000"),
    (("sts", "role_arn"), "arn:aws:iam::123456789012:user/ops", "must be an IAM role ARN"),
    (("sts", "token_timeout"), 899, "must be 900..43200 seconds (STS rule)"),
    (("sts", "external_id"), "x", "must be 2..1224 characters (STS rule)"),
    (("result_backend", "table"), "r", "must be a DynamoDB table name"),
    (("result_backend", "ttl_seconds"), 59, "must be 60..31536000 seconds"),
    (("revocations",), "revocations-table", "must be an object, got str"),
    (("revocations", "table"), "bad name!", "must be a DynamoDB table name"),
]


def _with(path: tuple[str, ...], value) -> dict:
    doc = full_document()
    if path[0] == "queues" and len(path) == 2:
        doc["queues"][value] = doc["queues"].pop("celery")
        return doc
    *parents, key = path
    target = doc
    for parent in parents:
        target = target[parent]
    target[key] = value
    return doc


def test_the_document_with_every_optional_field_is_valid():
    config = parse_document(full_document(), "outputs.json")
    assert config.sts.role_arn == config.queues["celery"].sts_role_arn == ROLE
    assert config.queues["celery"].max_message_bytes == 1_048_576


def test_a_document_without_a_queue_s_largest_message_means_256_kib():
    """Written before the field: the limit the runtime then applied to every queue."""
    assert parse_document(document(), "doc.json").queues["reports"].max_message_bytes == 262_144


def test_sts_without_a_shared_role_leaves_each_queue_to_name_its_own():
    """Fleets that share no queue have no role in common (infra.settings): ``sts.role_arn``
    is then null and every queue's entry names its fleet's role."""
    doc = full_document()
    doc["sts"]["role_arn"] = None
    config = parse_document(doc, "outputs.json")
    assert config.sts.role_arn is None and config.sts.token_timeout == 900
    assert config.queues["celery"].sts_role_arn == ROLE


@pytest.mark.parametrize("path, value, rule", BAD_VALUES,
                         ids=[".".join(row[0]) + "=" + repr(row[1]) for row in BAD_VALUES])
def test_a_bad_value_names_the_field_the_rule_and_the_value(path, value, rule):
    with pytest.raises(ConfigError) as caught:
        parse_document(_with(path, value), "outputs.json")
    field = ".".join(path)
    assert (caught.value.source, caught.value.field) == ("outputs.json", field)
    assert str(caught.value).startswith(f"outputs.json: {field}: ")
    assert rule in caught.value.problem
    assert repr(value) in caught.value.problem


def _covered(path: tuple[str, ...]) -> tuple[type, str]:
    """The config dataclass field a document path fills."""
    if path[0] == "queues" and len(path) > 1:
        if len(path) == 2:
            return QueueConfig, "name"
        return (QueueConfig, path[2]) if len(path) == 3 else (DeadLetterConfig, path[3])
    nested = {"sts": StsConfig, "result_backend": ResultBackendConfig,
              "revocations": RevocationsConfig}
    return (nested[path[0]], path[1]) if len(path) == 2 else (WorkerConfig, path[0])


NOT_IN_THE_DOCUMENT = {(WorkerConfig, "source")}
"""Where the loader read the document from, not a field of it."""


def test_every_config_field_has_a_bad_value_row():
    covered = {_covered(path) for path, _value, _rule in BAD_VALUES}
    every = {(cls, f.name) for cls in (WorkerConfig, QueueConfig, DeadLetterConfig, StsConfig,
                                       ResultBackendConfig, RevocationsConfig)
             for f in fields(cls)}
    missing = sorted(f"{cls.__name__}.{name}" for cls, name in every - covered
                     - NOT_IN_THE_DOCUMENT)
    assert missing == [], "add a BAD_VALUES row for each"


def test_a_document_that_is_not_an_object_is_refused():
    with pytest.raises(ConfigError, match=r"doc: must be an object, got list"):
        parse_document([1, 2], "doc")
