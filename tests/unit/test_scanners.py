"""The synthesized templates pass cfn-lint (0 errors, 0 warnings) and checkov
(0 failed checks, no skips), for the shipped spec (both worker fleets), the STS
variant, and the fleets built from the Dockerfile as an image asset."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra.settings import load_spec
from infra.stacks import CeleryKitStack
from tests.unit.cdk_context import asset_context, default_context, sts_context

ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = ROOT / ".venv" / "bin" / "cfn-lint"
CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"


CONTEXTS = {"default": default_context, "sts": sts_context, "asset": asset_context}


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def template_file(request, tmp_path_factory) -> Path:
    context = CONTEXTS[request.param]()
    stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(context))
    path = tmp_path_factory.mktemp(request.param) / "Kit.template.json"
    path.write_text(json.dumps(Template.from_stack(stack).to_json()))
    return path


def test_cfn_lint_finds_nothing(template_file):
    result = subprocess.run([str(CFN_LINT), "--format", "json", str(template_file)],
                            capture_output=True, text=True, timeout=120, check=False)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0


def test_checkov_fails_no_check(template_file):
    # --skip-download: no guideline download, so the scan stays on this machine.
    result = subprocess.run([str(CHECKOV), "-f", str(template_file), "--framework",
                             "cloudformation", "--quiet", "--compact", "--skip-download",
                             "-o", "json"],
                            capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert failed == []
    assert summary["skipped"] == 0 and summary["parsing_errors"] == 0
    assert summary["passed"] >= 100  # the SQS, IAM, KMS, DynamoDB, VPC, ECS, EC2 checks ran
