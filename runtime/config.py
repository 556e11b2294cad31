"""Load and validate the worker configuration document the stack emitted.

Where it comes from (first match wins, see :func:`load_config`):

- an explicit source: a path to the document, a path to ``cdk deploy
  --outputs-file`` output (``path`` or ``path#StackName``), or ``ssm:NAME``
  for the SSM parameter the stack wrote;
- ``CELERY_SQS_KIT_CONFIG_JSON``: the document itself (e.g. injected by ECS
  from the SSM parameter);
- ``CELERY_SQS_KIT_CONFIG``: a source as above.

The document (schema ``celery-sqs-kit/worker-config``, version 1)::

    {"schema": ..., "version": 1, "region": "eu-west-1",
     "endpoint_url": null,                      # optional
     "transport": "bundled",                    # or "stock"; optional, default "bundled"
     "default_queue": "celery",
     "queues": {"celery": {"url", "arn", "fifo", "visibility_timeout",
                           "wait_time_seconds", "task_time_limit", "max_countdown",
                           "max_message_bytes",      # optional, default 262144
                           "dead_letter_queue": {"url", "arn", "max_receive_count"} | null,
                           "backoff_policy": {"1": 10}, "backoff_tasks": [...],
                           "routes": [...], "sts_role_arn": null}},
     "sts": {"role_arn", "token_timeout", "external_id"} | null,
                                                # role_arn: for queues without their own
                                                # sts_role_arn; null when every fleet's
                                                # queues name their role
     "result_backend": {"table", "ttl_seconds"} | null,
     "revocations": {"table"} | null}           # optional: runtime.revocation's table

Optional fields may be absent (CloudFormation drops nulls). ``max_message_bytes`` is
the queue's MaximumMessageSize; a document written before it carried the field means
262144, the limit the runtime then applied to every queue. It never holds
credentials; a document that does is refused. Every field is checked against what
AWS and the runtime accept (:mod:`runtime.limits`, shared with the spec's rules), so a
hand-edited or damaged document stops the worker at start, not at its first task. Any
problem raises :class:`runtime.errors.ConfigError` naming the source, the field, the
rule and the value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runtime import limits
from runtime.errors import ConfigError
from runtime.schema import BUNDLED, OUTPUT_KEY, SCHEMA, TRANSPORT_NAMES, VERSION

ENV_SOURCE = "CELERY_SQS_KIT_CONFIG"
ENV_DOCUMENT = "CELERY_SQS_KIT_CONFIG_JSON"
SSM_PREFIX = "ssm:"
_CREDENTIAL_KEYS = frozenset({"access_key_id", "secret_access_key", "session_token",
                              "aws_access_key_id", "aws_secret_access_key", "aws_session_token"})


@dataclass(frozen=True)
class DeadLetterConfig:
    url: str
    arn: str
    max_receive_count: int


@dataclass(frozen=True)
class QueueConfig:
    name: str
    url: str
    arn: str
    fifo: bool
    visibility_timeout: int
    wait_time_seconds: int
    task_time_limit: int
    max_countdown: int
    max_message_bytes: int
    """The queue's MaximumMessageSize: the bundled transport refuses a larger message."""
    dead_letter_queue: DeadLetterConfig | None
    backoff_policy: Mapping[int, int]
    backoff_tasks: tuple[str, ...]
    routes: tuple[str, ...]
    sts_role_arn: str | None


@dataclass(frozen=True)
class StsConfig:
    role_arn: str | None
    """The role for queues whose entry names none; ``None`` when each names its own."""
    token_timeout: int
    external_id: str | None


@dataclass(frozen=True)
class ResultBackendConfig:
    table: str
    ttl_seconds: int


@dataclass(frozen=True)
class RevocationsConfig:
    table: str
    """The revocations table (:mod:`runtime.revocation`); the stack makes it with the
    result table."""


@dataclass(frozen=True)
class WorkerConfig:
    source: str
    region: str
    endpoint_url: str | None
    transport: str
    """What the spec's queue timings were checked for (``runtime.schema.TRANSPORT_NAMES``);
    what is rendered unless told otherwise. Documents written before the field: bundled."""
    default_queue: str
    queues: Mapping[str, QueueConfig]
    sts: StsConfig | None
    result_backend: ResultBackendConfig | None
    revocations: RevocationsConfig | None
    """``None``: revoking is refused and workers read no revocations (a stack without
    a result backend, or a document from before the revocations table)."""


def seconds_from_env(name: str) -> float | None:
    """``$name`` as a number of seconds > 0, or ``None`` when unset; anything else stops
    the worker with a :class:`ConfigError` naming the variable and the value."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"${name}", "", f"must be a number of seconds > 0, got {text!r}")
    return seconds


def load_config(source: str | None = None) -> WorkerConfig:
    """Find, read and validate the worker configuration (see the module docstring)."""
    if source is None:
        inline = os.environ.get(ENV_DOCUMENT)
        if inline:
            return parse_document(_decode(inline, f"${ENV_DOCUMENT}"), f"${ENV_DOCUMENT}")
        source = os.environ.get(ENV_SOURCE)
        if not source:
            raise ConfigError(
                "worker configuration", "",
                f"no source given: pass one, or set {ENV_SOURCE} (a path, path#Stack or "
                f"ssm:NAME) or {ENV_DOCUMENT} (the document)")
    if source.startswith(SSM_PREFIX):
        return parse_document(_read_ssm(source[len(SSM_PREFIX):], source), source)
    path_text, _, stack = source.partition("#")
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found (run `cdk deploy --outputs-file "
                          "...` or point to the emitted document)") from None
    except OSError as error:
        raise ConfigError(str(path), "", f"cannot be read: {error.strerror}") from None
    data = _decode(text, str(path))
    if isinstance(data, Mapping) and "schema" not in data:
        data = _from_outputs_file(data, stack, str(path))
    return parse_document(data, source)


def parse_document(data: Any, source: str) -> WorkerConfig:
    """Validate a decoded document; every problem names ``source`` and the field."""
    doc = _mapping(data, source, "")
    if doc.get("schema") != SCHEMA:
        raise ConfigError(source, "schema", f"must be {SCHEMA!r}, got {doc.get('schema')!r}")
    if doc.get("version") != VERSION:
        raise ConfigError(source, "version", f"unknown version {doc.get('version')!r}; this "
                          f"runtime reads version {VERSION}: upgrade the worker image or the stack")
    _refuse_credentials(doc, source, "")
    raw_queues = _mapping(doc.get("queues"), source, "queues")
    if not raw_queues:
        raise ConfigError(source, "queues", f"must name at least one queue, got {raw_queues!r}")
    queues = {name: _queue(name, raw, source) for name, raw in raw_queues.items()}
    default_queue = _field(doc, "default_queue", str, source, "")
    if default_queue not in queues:
        raise ConfigError(source, "default_queue",
                          f"{default_queue!r} is not one of the queues {sorted(queues)}")
    sts_raw = doc.get("sts")
    sts = None if sts_raw is None else StsConfig(
        role_arn=_optional(_mapping(sts_raw, source, "sts"), "role_arn", str, source, "sts.",
                           _ROLE_ARN),
        token_timeout=_field(sts_raw, "token_timeout", int, source, "sts.", _range(
            limits.MIN_STS_SESSION, limits.MAX_STS_SESSION, "seconds (STS rule)")),
        external_id=_optional(sts_raw, "external_id", str, source, "sts.", _length(
            limits.MIN_EXTERNAL_ID, limits.MAX_EXTERNAL_ID, "characters (STS rule)")),
    )
    result_raw = doc.get("result_backend")
    results = None if result_raw is None else ResultBackendConfig(
        table=_field(_mapping(result_raw, source, "result_backend"), "table", str, source,
                     "result_backend.", _TABLE_NAME),
        ttl_seconds=_field(result_raw, "ttl_seconds", int, source, "result_backend.",
                           _range(limits.MIN_RESULT_TTL, limits.MAX_RESULT_TTL, "seconds")),
    )
    revocations_raw = doc.get("revocations")
    revocations = None if revocations_raw is None else RevocationsConfig(
        table=_field(_mapping(revocations_raw, source, "revocations"), "table", str, source,
                     "revocations.", _TABLE_NAME))
    return WorkerConfig(
        source=source,
        region=_field(doc, "region", str, source, "", _format(
            limits.REGION, "must be an AWS region name such as eu-west-1")),
        endpoint_url=_optional(doc, "endpoint_url", str, source, "", _HTTP_URL),
        transport=_optional(doc, "transport", str, source, "", _one_of(TRANSPORT_NAMES))
        or BUNDLED,
        default_queue=default_queue,
        queues=MappingProxyType(queues),
        sts=sts,
        result_backend=results,
        revocations=revocations,
    )


def _queue(name: str, raw: Any, source: str) -> QueueConfig:
    where = f"queues.{name}."
    if not limits.is_queue_name(name):
        raise ConfigError(source, f"queues.{name}", "must be a queue name kombu looks up: "
                          "letters, digits, '-' and '_' (and a '.fifo' suffix), at most "
                          f"{limits.MAX_QUEUE_NAME_LENGTH} characters, got {name!r}")
    q = _mapping(raw, source, f"queues.{name}")
    url = _field(q, "url", str, source, where, _HTTP_URL)
    fifo = _field(q, "fifo", bool, source, where)
    if fifo != name.endswith(".fifo") or fifo != url.endswith(".fifo"):
        raise ConfigError(source, f"{where}fifo", f"is {fifo} but the name {name!r} and URL "
                          f"{url!r} must both end in '.fifo' exactly when fifo is true")
    dlq_raw = q.get("dead_letter_queue")
    dlq = None if dlq_raw is None else DeadLetterConfig(
        url=_field(_mapping(dlq_raw, source, f"{where}dead_letter_queue"), "url", str, source,
                   f"{where}dead_letter_queue.", _HTTP_URL),
        arn=_field(dlq_raw, "arn", str, source, f"{where}dead_letter_queue.", _SQS_ARN),
        max_receive_count=_field(dlq_raw, "max_receive_count", int, source,
                                 f"{where}dead_letter_queue.", _range(
                                     limits.MIN_RECEIVE_COUNT, limits.MAX_RECEIVE_COUNT, "")),
    )
    policy_raw = _mapping(q.get("backoff_policy", {}), source, f"{where}backoff_policy")
    try:
        policy = {int(k): int(v) for k, v in policy_raw.items()}
    except (TypeError, ValueError):
        raise ConfigError(source, f"{where}backoff_policy",
                          f"must map attempt numbers to seconds, got {dict(policy_raw)!r}") from None
    return QueueConfig(
        name=name,
        url=url,
        arn=_field(q, "arn", str, source, where, _SQS_ARN),
        fifo=fifo,
        visibility_timeout=_field(q, "visibility_timeout", int, source, where,
                                  _range(0, limits.MAX_VISIBILITY_TIMEOUT, "seconds")),
        wait_time_seconds=_field(q, "wait_time_seconds", int, source, where,
                                 _range(0, limits.MAX_WAIT_TIME, "seconds")),
        task_time_limit=_field(q, "task_time_limit", int, source, where,
                               _range(1, limits.MAX_VISIBILITY_TIMEOUT, "seconds")),
        max_countdown=_field(q, "max_countdown", int, source, where,
                             _range(0, limits.MAX_COUNTDOWN, "seconds")),
        max_message_bytes=_optional(q, "max_message_bytes", int, source, where, _range(
            limits.MIN_MESSAGE_SIZE, limits.MAX_MESSAGE_SIZE, "bytes (SQS rule)"))
        or limits.CLASSIC_MESSAGE_SIZE,
        dead_letter_queue=dlq,
        backoff_policy=MappingProxyType(policy),
        backoff_tasks=tuple(_strings(q, "backoff_tasks", source, where)),
        routes=tuple(_strings(q, "routes", source, where)),
        sts_role_arn=_optional(q, "sts_role_arn", str, source, where, _ROLE_ARN),
    )


def _from_outputs_file(data: Mapping[str, Any], stack: str, source: str) -> Any:
    candidates = {name: outputs for name, outputs in data.items()
                  if isinstance(outputs, Mapping) and OUTPUT_KEY in outputs}
    if stack:
        if stack not in candidates:
            raise ConfigError(source, f"{stack}.{OUTPUT_KEY}",
                              f"stack {stack!r} has no {OUTPUT_KEY} output "
                              f"(stacks with one: {sorted(candidates)})")
        chosen = candidates[stack]
    elif len(candidates) == 1:
        chosen = next(iter(candidates.values()))
    else:
        raise ConfigError(source, OUTPUT_KEY,
                          f"expected one stack with a {OUTPUT_KEY} output, found "
                          f"{sorted(candidates) or 'none'}: name one as {source}#StackName")
    return _decode(chosen[OUTPUT_KEY], f"{source} ({OUTPUT_KEY} output)")


def _read_ssm(name: str, source: str) -> Any:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise ConfigError(source, "", f"SSM GetParameter failed ({code}): check the parameter "
                          "name, the region and that this role may ssm:GetParameter it") from None
    except BotoCoreError as error:
        raise ConfigError(source, "", f"SSM GetParameter failed: {error}") from None
    return _decode(value, source)


def _decode(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(source, "", f"is not valid JSON (truncated or edited?): {error.msg} "
                          f"at line {error.lineno} column {error.colno}") from None


def _refuse_credentials(value: Any, source: str, where: str) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key in _CREDENTIAL_KEYS:
                raise ConfigError(source, f"{where}{key}", "credentials do not belong in the "
                                  "worker configuration; workers use their role's credentials")
            _refuse_credentials(inner, source, f"{where}{key}.")


def _mapping(value: Any, source: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(source, field, f"must be an object, got {type(value).__name__} "
                          f"{value!r}" if value is not None else "is missing")
    return value


Check = Callable[[Any], "str | None"]
"""A field's rule: what it must be when ``value`` breaks it, else ``None``."""


def _range(low: int, high: int, unit: str) -> Check:
    rule = f"must be {low}..{high}" + (f" {unit}" if unit else "")
    return lambda value: None if low <= value <= high else rule


def _length(low: int, high: int, unit: str) -> Check:
    return lambda value: None if low <= len(value) <= high else f"must be {low}..{high} {unit}"


def _format(pattern: re.Pattern[str], rule: str) -> Check:
    return lambda value: None if pattern.match(value) else rule


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


_HTTP_URL = _format(limits.HTTP_URL, "must be an http:// or https:// URL")
_SQS_ARN = _format(limits.SQS_ARN, "must be an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)")
_TABLE_NAME = _format(limits.TABLE_NAME, "must be a DynamoDB table name: 3..255 letters, "
                      "digits, '_', '-', '.'")
_ROLE_ARN = _format(limits.ROLE_ARN, "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")


def _field(raw: Mapping[str, Any], key: str, kind: type, source: str, where: str,
           check: Check | None = None) -> Any:
    if key not in raw or raw[key] is None:
        raise ConfigError(source, f"{where}{key}", "is missing")
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(source, f"{where}{key}",
                          f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is str and not value:
        raise ConfigError(source, f"{where}{key}", "is empty, got ''")
    broken = check(value) if check is not None else None
    if broken:
        raise ConfigError(source, f"{where}{key}", f"{broken}, got {value!r}")
    return value


def _optional(raw: Mapping[str, Any], key: str, kind: type, source: str, where: str,
              check: Check | None = None) -> Any:
    return None if raw.get(key) is None else _field(raw, key, kind, source, where, check)


def _strings(raw: Mapping[str, Any], key: str, source: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(source, f"{where}{key}", f"must be a list of strings, got {value!r}")
    return value
