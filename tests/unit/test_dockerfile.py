"""The worker image's Dockerfile passes hadolint (no findings, no ignores) and checkov's
Dockerfile checks (one inline skip, reasoned in the Dockerfile)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
CHECKOV = ROOT / ".venv-scan" / "bin" / "checkov"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_hadolint_finds_nothing():
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_does_check(tmp_path):
    """The clean result above comes from a linter that finds things."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN pip install celery\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3013" in result.stdout  # pin versions in pip


def test_checkov_fails_no_dockerfile_check():
    # --skip-download: no guideline download, so the scan stays on this machine.
    result = subprocess.run([str(CHECKOV), "-f", str(DOCKERFILE), "--framework", "dockerfile",
                             "--compact", "--skip-download", "-o", "json"],
                            capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    failed = [c["check_id"] for c in report["results"].get("failed_checks", [])]
    skipped = [c["check_id"] for c in report["results"].get("skipped_checks", [])]
    assert failed == []
    assert skipped == ["CKV_DOCKER_7"]
    assert report["summary"]["passed"] >= 10
