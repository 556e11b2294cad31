"""``-c celery_sqs_kit:scaling=false`` keeps the fleets and drops only their scaling."""

import pytest

from infra.settings import load_spec
from runtime.errors import SpecError

CONTEXT = {"queues": [{"name": "celery"}],
           "workers": {"ecs": {"image_uri": "kit:local"}, "ec2": {"image_uri": "kit:local"}}}


def test_scaling_false_keeps_both_fleets_without_scaling():
    spec = load_spec(CONTEXT, scaling="false")
    assert spec.workers.ecs is not None and spec.workers.ec2 is not None
    assert spec.workers.scaling is False
    assert load_spec(CONTEXT).workers.scaling is True


def test_fleets_false_wins_and_a_bad_value_names_the_key():
    workers = load_spec(CONTEXT, fleets="false", scaling="false").workers
    # The fleets are not deployed, but their queues still decide their identities' access.
    assert workers.deployed is False and workers.ecs is not None
    with pytest.raises(SpecError, match="celery_sqs_kit:scaling"):
        load_spec(CONTEXT, scaling="maybe")
