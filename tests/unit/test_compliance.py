"""infra.compliance: every cdk-nag pack passes with only the acknowledged findings,
and each acknowledgment is load-bearing (without it, synth fails on that rule), for
the shipped spec, the STS variant, fleets built from the Dockerfile, and no fleets."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

from infra.compliance import ACKNOWLEDGMENTS, acknowledge_findings, acknowledgments
from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from tests.unit.cdk_context import asset_context, default_context, no_fleet_context, sts_context

PACKS = {"AwsSolutions": AwsSolutionsChecks, "NIST.800.53.R5": NIST80053R5Checks,
         "HIPAA.Security": HIPAASecurityChecks}


CONTEXTS = {"default": default_context, "sts": sts_context, "asset": asset_context,
            "no-fleet": no_fleet_context}


def synth(tmp_path, pack: str, context: dict, acknowledge: bool = True) -> tuple[dict, set]:
    """Synthesize with one pack (the shared report keeps only failing packs); return
    that pack's report and the rule names the stack acknowledges for it. Raises if
    the pack fails."""
    app = cdk.App(outdir=str(tmp_path))
    stack = CeleryKitStack(app, "Kit", spec=load_spec(context))
    Validations.of(app).add_plugins(PACKS[pack](app))
    acknowledged = {a.rule.split("::", 1)[1] for a in acknowledgments(stack)
                    if a.rule.startswith(f"{pack}::")}
    if acknowledge:
        acknowledge_findings(stack)
    try:
        app.synth()
    finally:
        report = json.loads((tmp_path / "validation-report.json").read_text()) \
            if (tmp_path / "validation-report.json").exists() else {"pluginReports": []}
    return next((r for r in report["pluginReports"] if r["pluginName"] == pack),
                {"violations": [], "suppressedViolations": []}), acknowledged


@pytest.mark.parametrize("pack", sorted(PACKS))
@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_pack_passes_with_only_acknowledged_findings(tmp_path, pack, context):
    report, acknowledged = synth(tmp_path, pack, CONTEXTS[context]())
    assert report["violations"] == []
    suppressed = {v["ruleName"] for v in report.get("suppressedViolations", [])}
    assert suppressed <= acknowledged


@pytest.mark.parametrize("pack", sorted(PACKS))
@pytest.mark.parametrize("context", ["default", "asset"])
def test_without_acknowledgments_synth_fails_on_exactly_those_rules(tmp_path, pack, context):
    with pytest.raises(Exception, match="ValidationFailed"):
        synth(tmp_path, pack, CONTEXTS[context](), acknowledge=False)
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (mine,) = [r for r in report["pluginReports"] if r["pluginName"] == pack]
    failed = {v["ruleName"] for v in mine["violations"]}
    _, acknowledged = synth(tmp_path / "acknowledged", pack, CONTEXTS[context]())
    assert failed == acknowledged


def test_image_asset_adds_exactly_the_ecr_token_wildcard_on_the_two_pulling_roles():
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(asset_context()))
    token_wildcards = {a.scope for a in acknowledgments(stack)
                       if a.rule == "AwsSolutions::AwsSolutions-IAM5[Resource::*]"}
    assert token_wildcards == {"Workers/InstanceRole", "EcsWorkers/TaskDefinition/ExecutionRole"}


def test_lifecycle_wildcard_is_acknowledged_for_the_fleets_own_group_only():
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(default_context()))
    group = stack.fleets.ec2.auto_scaling_group.node.default_child.auto_scaling_group_name
    (lifecycle,) = [a for a in acknowledgments(stack) if "autoScalingGroup" in a.rule]
    assert lifecycle.scope == "Workers/InstanceRole"
    assert lifecycle.rule.endswith(f":autoScalingGroup:*:autoScalingGroupName/{group}]")


def test_every_acknowledgment_has_a_reason_and_a_scope():
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(asset_context()))
    for ack in (*ACKNOWLEDGMENTS, *acknowledgments(stack)):
        assert "::" in ack.rule and ack.scope and len(ack.reason) > 60
