"""L3 constructs of celery-sqs-kit."""

from infra.constructs.celery_queue import CeleryQueue
from infra.constructs.result_table import ResultTable
from infra.constructs.worker_roles import WorkerRoles

__all__ = ["CeleryQueue", "ResultTable", "WorkerRoles"]
