"""The worker fleets of a stack, from the spec's ``workers`` block."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.constructs import (CeleryQueue, Ec2WorkerFleet, EcsWorkerService, WorkerNetwork,
                              WorkerRoles)
from infra.constructs.worker_runtime import WorkerImage, worker_image_asset
from infra.settings import FleetSpec, WorkersSpec


@dataclass(frozen=True)
class WorkerFleets:
    """What was made: nothing at all when the spec has no fleet."""

    network: WorkerNetwork | None = None
    ecs: EcsWorkerService | None = None
    ec2: Ec2WorkerFleet | None = None


def worker_fleets(scope: Construct, spec: WorkersSpec, *, queues: Mapping[str, CeleryQueue],
                  roles: WorkerRoles, config_parameter_name: str,
                  key: kms.IKey) -> WorkerFleets:
    """One VPC for both fleets, and one image asset per directory they build from; none
    of it when the spec is not ``deployed``."""
    if not spec.deployed or (spec.ecs is None and spec.ec2 is None):
        return WorkerFleets()
    network = WorkerNetwork(scope, "Network", encryption_key=key)
    assets: dict[str, WorkerImage] = {}

    def image(fleet: FleetSpec) -> WorkerImage:
        if fleet.image_uri is not None:
            return fleet.image_uri
        if fleet.image_directory not in assets:
            assets[fleet.image_directory] = worker_image_asset(
                scope, f"WorkerImage{len(assets) or ''}", fleet.image_directory)
        return assets[fleet.image_directory]

    def common(fleet: FleetSpec) -> dict:
        return {"queues": [queues[name] for name in fleet.queues], "image": image(fleet),
                "config_parameter_name": config_parameter_name, "vpc": network.vpc,
                "concurrency": fleet.concurrency,
                "target_backlog_per_worker": fleet.target_backlog_per_worker,
                "min_capacity": fleet.min_capacity, "max_capacity": fleet.max_capacity,
                "stop_timeout": Duration.seconds(fleet.stop_timeout), "encryption_key": key,
                "scaling": spec.scaling}

    return WorkerFleets(
        network=network,
        ecs=None if spec.ecs is None else EcsWorkerService(
            scope, "EcsWorkers", task_role=roles.task_role, cpu=spec.ecs.cpu,
            memory_limit_mib=spec.ecs.memory, **common(spec.ecs)),
        ec2=None if spec.ec2 is None else Ec2WorkerFleet(
            scope, "Ec2Workers", instance_profile=roles.instance_profile,
            instance_type=ec2.InstanceType(spec.ec2.instance_type), **common(spec.ec2)),
    )
