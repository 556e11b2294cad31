"""Stacks of celery-sqs-kit."""

from infra.stacks.celery_kit_stack import CeleryKitStack

__all__ = ["CeleryKitStack"]
