"""The worker configuration document the stack emits (see ``runtime.config``).

Built from the spec and the deployed resources' attributes (Tokens that
CloudFormation resolves at deploy time). It holds names, URLs, ARNs and limits;
never a key, a secret or a session token: workers take credentials from their
environment's default chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from infra.constructs import CeleryQueue, ResultTable, RevocationTable
from infra.settings import KitSpec
from runtime.schema import SCHEMA, VERSION


def worker_config_document(spec: KitSpec, *, queues: Mapping[str, CeleryQueue],
                           queue_roles: Mapping[str, iam.IRole],
                           broker_role: iam.IRole | None,
                           results: ResultTable | None,
                           revocations: RevocationTable | None) -> dict[str, Any]:
    """``queue_roles``: the STS role of each queue that does not use ``broker_role`` (a
    dedicated role, or the broker role of the one fleet that consumes it). ``sts`` is
    written whenever the spec enables it; its ``role_arn`` is null when no queue uses
    a role shared by every fleet."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "region": Aws.REGION,
        "transport": spec.transport,
        "endpoint_url": spec.endpoint_url,
        "default_queue": spec.default_queue,
        "queues": {
            q.name: _queue_entry(q, queues[q.name], queue_roles.get(q.name))
            for q in spec.queues
        },
        "sts": None if not spec.sts.enabled else {
            "role_arn": None if broker_role is None else broker_role.role_arn,
            "token_timeout": spec.sts.token_timeout,
            "external_id": spec.sts.external_id,
        },
        "result_backend": None if results is None else {
            "table": results.table.table_name,
            "ttl_seconds": spec.result_backend.ttl_seconds,
        },
        "revocations": None if revocations is None else {
            "table": revocations.table_name,
        },
    }


def _queue_entry(q, construct: CeleryQueue, role: iam.IRole | None) -> dict[str, Any]:
    dlq = construct.dead_letter_queue
    return {
        "url": construct.queue.queue_url,
        "arn": construct.queue.queue_arn,
        "fifo": q.fifo,
        "visibility_timeout": q.visibility_timeout,
        "wait_time_seconds": q.receive_wait_time,
        "task_time_limit": q.task_time_limit,
        "max_countdown": q.max_countdown,
        "max_message_bytes": q.max_message_size_bytes,
        "dead_letter_queue": None if dlq is None else {
            "url": dlq.queue_url,
            "arn": dlq.queue_arn,
            "max_receive_count": q.max_receive_count,
        },
        "backoff_policy": {str(k): v for k, v in sorted(q.backoff_policy.items())},
        "backoff_tasks": list(q.backoff_tasks),
        "routes": list(q.routes),
        "sts_role_arn": None if role is None else role.role_arn,
    }
