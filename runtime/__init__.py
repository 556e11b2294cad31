"""celery-sqs-kit runtime: what ships inside the worker image.

It loads the worker configuration the CDK stack emitted, turns it into Celery
settings, and (in its own module) provides the bundled kombu transport. Nothing
here imports ``aws_cdk``: worker images stay small.
"""
