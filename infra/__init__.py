"""celery-sqs-kit infrastructure: the fleet spec, CDK constructs and stacks."""
