"""Sample tasks; the app is configured only by the generated ``celeryconfig``."""

from __future__ import annotations

import time

import boto3
from celery import Celery

app = Celery("demo")
app.config_from_object("celeryconfig")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def whoami() -> str:
    """The identity this worker runs as (proves it is the deployed role, not a key)."""
    return boto3.client("sts").get_caller_identity()["Arn"]


@app.task
def report(name: str) -> str:
    return f"report {name}: ready"


@app.task
def place_order(order_id: str, quantity: int) -> dict[str, object]:
    return {"order": order_id, "quantity": quantity, "status": "placed"}


@app.task
def pause(seconds: float) -> float:
    """A task that takes a while: what a warm stop and scale-in protection are about."""
    time.sleep(seconds)
    return seconds
