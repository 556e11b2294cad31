"""L3 constructs of celery-sqs-kit."""

from infra.constructs.backlog_scaling import BacklogScaling
from infra.constructs.celery_queue import CeleryQueue
from infra.constructs.ec2_worker_fleet import Ec2WorkerFleet
from infra.constructs.ecs_worker_service import EcsWorkerService
from infra.constructs.queue_alarms import QueueAlarms
from infra.constructs.result_table import ResultTable
from infra.constructs.revocation_table import RevocationTable
from infra.constructs.worker_network import WorkerNetwork
from infra.constructs.worker_roles import WorkerRoles

__all__ = ["BacklogScaling", "CeleryQueue", "Ec2WorkerFleet", "EcsWorkerService", "QueueAlarms",
           "ResultTable", "RevocationTable",
           "WorkerNetwork", "WorkerRoles"]
