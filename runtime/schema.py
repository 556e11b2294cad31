"""Names shared by the stack and the runtime: the identity of the emitted worker
configuration document, and the result-table item that holds revocations."""

SCHEMA = "celery-sqs-kit/worker-config"
VERSION = 1
OUTPUT_KEY = "WorkerConfig"
"""The CloudFormation output (and so the ``cdk deploy --outputs-file`` key) holding it."""
REVOCATIONS_ITEM = "celery-sqs-kit:revoked"
"""The result-table item that holds revoked task ids (``runtime.revocation``; the stack
lets the producer role update this item only)."""
