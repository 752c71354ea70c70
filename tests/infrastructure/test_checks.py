"""The checks that keep the templates honest: cdk-nag, cfn-lint, checkov, deterministic synthesis."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from stacks.application import build_app, build_stacks
from stacks.config import Settings

CONFIGS = {
    "default": {},
    "provisioned-vpc": {"endpoint_mode": "provisioned", "vpc": True, "data_capture": True},
    "gpu": {
        "endpoint_mode": "provisioned",
        "endpoint_instance_type": "ml.g5.xlarge",
        "batch_instance_type": "ml.g4dn.xlarge",
    },
    "hub-no-endpoint-ephemeral": {"model_source": "hub", "endpoint_mode": "none", "retain_data": False},
}
ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


@pytest.mark.parametrize("name", CONFIGS)
def test_nag_packs_pass_with_only_acknowledged_findings(synth, name):
    # synth() calls app.synth(), which raises ValidationFailed on any unacknowledged finding.
    assert synth(**CONFIGS[name]).raw["Resources"]


def test_an_unacknowledged_finding_fails_synthesis(tmp_path, cdk_context):
    # Given the stack plus a bucket without encryption, logging or TLS policy
    app, stack = build_app(cdk_context, outdir=str(tmp_path))
    s3.CfnBucket(stack, "CarelessBucket")
    # When synthesized / Then synthesis fails and the report names the findings on that bucket
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    findings = {
        (plugin["pluginName"], violation["ruleName"].split("[")[0])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        if any("CarelessBucket" in c["constructPath"] for c in violation["violatingConstructs"])
    }
    assert ("AwsSolutions", "AwsSolutions-S1") in findings
    assert ("HIPAA.Security", "HIPAA.Security-S3BucketLoggingEnabled") in findings


def test_an_unacknowledged_finding_in_the_endpoint_stack_fails_synthesis(tmp_path, cdk_context):
    # Given the endpoint's stack plus a bucket without encryption, logging or TLS policy
    app = cdk.App(context=dict(cdk_context), outdir=str(tmp_path))
    _, endpoint = build_stacks(app, Settings.from_context(app.node.get_all_context()))
    assert endpoint is not None
    s3.CfnBucket(endpoint, "CarelessBucket")
    # When synthesized / Then the compliance packs, added to the app, fail it on that stack's bucket
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    paths = {
        c["constructPath"]
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for c in violation["violatingConstructs"]
    }
    assert "ZeroShotClassification-Endpoint/CarelessBucket" in paths


def templates(s: Any) -> list[Path]:
    """The synthesized templates of a configuration: the main stack's and the endpoint stack's."""
    return [s.template_file, *([s.endpoint.template_file] if s.endpoint else [])]


@pytest.mark.parametrize("name", CONFIGS)
def test_cfn_lint_finds_no_errors(synth, name):
    result = subprocess.run(
        [str(CFN_LINT), "--format", "json", *map(str, templates(synth(**CONFIGS[name])))],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], errors


@pytest.mark.parametrize("name", CONFIGS)
def test_checkov_finds_no_failed_checks_and_every_skip_has_a_reason(synth, name):
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run `make install` (it creates the checkov virtualenv)")
    files = [arg for template in templates(synth(**CONFIGS[name])) for arg in ("-f", str(template))]
    result = subprocess.run(
        [str(CHECKOV), *files, "--framework", "cloudformation", "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert failed == []
    for skipped in report["results"].get("skipped_checks", []):
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped


def test_synthesis_is_deterministic(tmp_path, fresh_synth):
    # Two synths of the same inputs in different directories give byte-identical templates (no clock, no AWS call).
    first = [t.read_bytes() for t in templates(fresh_synth(tmp_path / "a"))]
    second = [t.read_bytes() for t in templates(fresh_synth(tmp_path / "b"))]
    assert len(first) == 2 and first == second


def test_cdk_cli_synth_works_offline(tmp_path):
    # `cdk synth` through the pinned CLI and cdk.json (not in-process) succeeds without credentials.
    cdk = ROOT / "node_modules" / ".bin" / "cdk"
    if not cdk.exists() or shutil.which("node") is None:
        pytest.fail("node_modules missing: run `make install`")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    result = subprocess.run(
        [str(cdk), "synth", "--quiet", "--no-notices", "--output", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "ZeroShotClassification.template.json").exists()
    assert (tmp_path / "out" / "ZeroShotClassification-Endpoint.template.json").exists()
