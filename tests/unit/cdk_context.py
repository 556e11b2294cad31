"""Spec contexts for stack tests: the shipped cdk.json block, an STS variant, the
fleets built from the repository's Dockerfile, and no fleets at all."""

from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def default_context() -> dict:
    return json.loads((ROOT / "cdk.json").read_text())["context"]["celery_sqs_kit"]


def sts_context() -> dict:
    ctx = copy.deepcopy(default_context())
    ctx["sts"] = {"enabled": True, "token_timeout": 1800, "max_session_duration": 7200,
                  "external_id": "fleet-ext-id"}
    ctx["queues"][1]["dedicated_role"] = True
    return ctx


def asset_context() -> dict:
    """Both fleets run the Dockerfile as a CDK image asset (what users on AWS do)."""
    ctx = copy.deepcopy(default_context())
    for fleet in ctx["workers"].values():
        del fleet["image_uri"]
    return ctx


def no_fleet_context() -> dict:
    ctx = copy.deepcopy(default_context())
    del ctx["workers"]
    return ctx
