"""The synthesized templates pass cfn-lint (0 errors, 0 warnings) and checkov
(0 failed checks, no skips), for the shipped spec (both worker fleets), the STS
variant, and the fleets built from the Dockerfile as an image asset. Each tool runs once
over the three templates (its start-up is most of its time); each test reads its
template's findings from that run."""

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


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """Each variant's synthesized template, written to one directory."""
    out = tmp_path_factory.mktemp("templates")
    paths = {}
    for name, context in sorted(CONTEXTS.items()):
        stack = CeleryKitStack(cdk.App(), "Kit", spec=load_spec(context()))
        paths[name] = out / f"{name}.template.json"
        paths[name].write_text(json.dumps(Template.from_stack(stack).to_json()))
    return paths


@pytest.fixture(scope="module")
def cfn_lint(templates) -> tuple[int, list[dict]]:
    """One cfn-lint run over every template (its start-up is most of its time)."""
    result = subprocess.run([str(CFN_LINT), "--format", "json", *map(str, templates.values())],
                            capture_output=True, text=True, timeout=300, check=False)
    return result.returncode, json.loads(result.stdout or "[]")


@pytest.fixture(scope="module")
def checkov(templates) -> dict:
    """One checkov run over every template; its report names each check's file."""
    # --skip-download: no guideline download, so the scan stays on this machine.
    files = [arg for path in templates.values() for arg in ("-f", str(path))]
    result = subprocess.run([str(CHECKOV), *files, "--framework", "cloudformation",
                             "--compact", "--skip-download", "-o", "json"],
                            capture_output=True, text=True, timeout=600, check=False)
    return json.loads(result.stdout)


@pytest.mark.parametrize("variant", sorted(CONTEXTS))
def test_cfn_lint_finds_nothing(variant, templates, cfn_lint):
    returncode, findings = cfn_lint
    assert [f for f in findings if Path(f["Filename"]) == templates[variant]] == []
    assert returncode == 0, findings


@pytest.mark.parametrize("variant", sorted(CONTEXTS))
def test_checkov_fails_no_check(variant, templates, checkov):
    def of_variant(kind: str) -> list[dict]:
        return [c for c in checkov["results"].get(kind, [])
                if c["file_path"].endswith(templates[variant].name)]
    failed = [(c["check_id"], c["resource"]) for c in of_variant("failed_checks")]
    assert failed == []
    assert of_variant("skipped_checks") == [] and checkov["summary"]["parsing_errors"] == 0
    assert len(of_variant("passed_checks")) >= 100  # the SQS, IAM, KMS, DynamoDB, VPC, ECS,
    # EC2 checks ran on this template
