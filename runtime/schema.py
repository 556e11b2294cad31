"""The identity of the emitted worker configuration document, shared by the
stack that writes it and the runtime that reads it."""

SCHEMA = "celery-sqs-kit/worker-config"
VERSION = 1
OUTPUT_KEY = "WorkerConfig"
"""The CloudFormation output (and so the ``cdk deploy --outputs-file`` key) holding it."""
