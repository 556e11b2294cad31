"""infra.compliance: every cdk-nag pack passes with only the acknowledged findings,
and each acknowledgment is load-bearing (without it, synth fails on that rule)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

from infra.compliance import ACKNOWLEDGMENTS, acknowledge_findings
from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from tests.unit.cdk_context import default_context, sts_context

PACKS = {"AwsSolutions": AwsSolutionsChecks, "NIST.800.53.R5": NIST80053R5Checks,
         "HIPAA.Security": HIPAASecurityChecks}


def synth(tmp_path, pack: str, context: dict, acknowledge: bool = True) -> dict:
    """Synthesize with one pack (the shared report keeps only failing packs) and
    return that pack's report; raises if the pack fails."""
    app = cdk.App(outdir=str(tmp_path))
    stack = CeleryKitStack(app, "Kit", spec=load_spec(context))
    Validations.of(app).add_plugins(PACKS[pack](app))
    if acknowledge:
        acknowledge_findings(stack)
    try:
        app.synth()
    finally:
        report = json.loads((tmp_path / "validation-report.json").read_text()) \
            if (tmp_path / "validation-report.json").exists() else {"pluginReports": []}
    return next((r for r in report["pluginReports"] if r["pluginName"] == pack),
                {"violations": [], "suppressedViolations": []})


@pytest.mark.parametrize("pack", sorted(PACKS))
@pytest.mark.parametrize("context", [default_context(), sts_context()], ids=["default", "sts"])
def test_pack_passes_with_only_acknowledged_findings(tmp_path, pack, context):
    report = synth(tmp_path, pack, context)
    assert report["violations"] == []
    acknowledged = {a.rule.split("::")[1] for a in ACKNOWLEDGMENTS}
    suppressed = {v["ruleName"] for v in report.get("suppressedViolations", [])}
    assert suppressed <= acknowledged


@pytest.mark.parametrize("pack", ["NIST.800.53.R5", "HIPAA.Security"])
def test_without_acknowledgments_synth_fails_on_exactly_those_rules(tmp_path, pack):
    with pytest.raises(Exception, match="ValidationFailed"):
        synth(tmp_path, pack, default_context(), acknowledge=False)
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (mine,) = [r for r in report["pluginReports"] if r["pluginName"] == pack]
    failed = {v["ruleName"] for v in mine["violations"]}
    assert failed == {a.rule.split("::")[1] for a in ACKNOWLEDGMENTS if a.rule.startswith(pack)}


def test_every_acknowledgment_has_a_reason_and_a_scope():
    for ack in ACKNOWLEDGMENTS:
        assert "::" in ack.rule and ack.scope and len(ack.reason) > 60
