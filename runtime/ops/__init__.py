"""The operator CLI: ``python -m runtime.ops COMMAND``.

Commands (each with ``--help``, a table by default and ``--json`` for scripts):

- ``status [QUEUE...]``: per queue, messages visible, in flight and delayed, the age
  of the oldest (CloudWatch), the DLQ's depth, and whether the deployed queue
  matches the config (:mod:`runtime.ops.status`);
- ``doctor``: every difference between the config and the deployed queues, and
  what the caller may do, each problem with its fix (:mod:`runtime.ops.doctor`);
- ``dlq peek QUEUE``: dead letters with their reason, source queue and task, none
  consumed (:mod:`runtime.ops.peek`);
- ``dlq redrive QUEUE``: dead letters back to their source queue, exactly once even
  when interrupted (:mod:`runtime.ops.redrive`, :mod:`runtime.ops.copy`).

The config comes from the same sources as the workers' (:func:`runtime.config.load_config`):
``--config`` (a path, ``outputs.json#Stack`` or ``ssm:NAME``), else
``CELERY_SQS_KIT_CONFIG_JSON``, else ``CELERY_SQS_KIT_CONFIG``. Credentials come from
the default chain; the region from the document; the endpoint from the document or
``AWS_ENDPOINT_URL`` (emulators).

Exit status: 0 success; 1 a check found problems (mismatches, dead letters left
uncertain); 2 usage or config error; 3 AWS error (access denied, no such queue,
expired credentials, unreachable); 130 interrupted. Every error is one line on
stderr that names what to fix. This package never imports ``aws_cdk``.
"""
