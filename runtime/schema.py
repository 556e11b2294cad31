"""Names shared by the stack and the runtime: the identity of the emitted worker
configuration document, the transports it may be written for, and the result-table item
that holds revocations."""

SCHEMA = "celery-sqs-kit/worker-config"
VERSION = 1
OUTPUT_KEY = "WorkerConfig"
"""The CloudFormation output (and so the ``cdk deploy --outputs-file`` key) holding it."""
REVOCATIONS_ITEM = "celery-sqs-kit:revoked"
"""The result-table item that holds revoked task ids (``runtime.revocation``; the stack
lets the producer role update this item only)."""

BUNDLED, STOCK = "bundled", "stock"
TRANSPORT_NAMES = (BUNDLED, STOCK)
"""Which transport consumes the queues: the spec's ``transport`` (its timing rules depend
on it), carried in the document as ``transport`` and rendered as ``broker_transport``.
``bundled`` is ``runtime.transport``, whose heartbeat keeps held messages invisible;
``stock`` is kombu's own SQS transport, which does not."""
