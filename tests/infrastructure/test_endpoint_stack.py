"""The real-time endpoint's own stack: what each stack holds, which way they depend on each other, what crosses from
the main stack to the endpoint's, and the endpoint's name, published and watched by the main stack."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from stacks.config import ConfigError, Settings
from stacks.endpoint import ENDPOINT_NAME_LENGTH, endpoint_name
from stacks.endpoint_stack import endpoint_stack_name
from stacks.summary import summarize

ENDPOINT_TYPES = {
    "AWS::SageMaker::Endpoint",
    "AWS::SageMaker::EndpointConfig",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
}
CONFIGURATIONS = {
    "serverless": {},
    "provisioned": {"endpoint_mode": "provisioned"},
    "provisioned-vpc": {"endpoint_mode": "provisioned", "vpc": True},
    "provisioned-gpu-capture": {
        "endpoint_mode": "provisioned",
        "endpoint_instance_type": "ml.g5.xlarge",
        "data_capture": True,
    },
}
# SageMaker's pattern for endpoint names (CreateEndpoint's EndpointName).
SAGEMAKER_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# What the endpoint's stack may read from the main stack: resources that live as long as the main stack does.
LONG_LIVED = {
    "AWS::S3::Bucket",
    "AWS::KMS::Key",
    "AWS::IAM::Role",
    "AWS::Lambda::Function",
    "AWS::EC2::Subnet",
    "AWS::EC2::SecurityGroup",
}


def walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a template value (to find intrinsic functions)."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def manifest(s: Any) -> dict[str, Any]:
    return json.loads((s.template_file.parent / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_both_stacks_synthesize_with_the_compliance_packs_and_only_the_endpoint_stack_has_endpoint_resources(
    synth, name
):
    # Given a configuration with an endpoint / When synthesized (cdk-nag's packs run on every stack of the app)
    s = synth(**CONFIGURATIONS[name])
    # Then the endpoint's stack is <stack_name>-Endpoint and holds the endpoint, its config and its model
    assert s.endpoint is not None and s.endpoint.stack.stack_name == "ZeroShotClassification-Endpoint"
    endpoint_types = {r["Type"] for r in s.endpoint.raw["Resources"].values()}
    assert {"AWS::SageMaker::Endpoint", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Model"} <= endpoint_types
    # and the main stack none of the endpoint's resources
    assert not {r["Type"] for r in s.raw["Resources"].values()} & ENDPOINT_TYPES


def test_endpoint_mode_none_gives_one_stack(synth):
    s = synth(endpoint_mode="none")
    assert s.endpoint is None
    stacks = [a for a in manifest(s)["artifacts"].values() if a["type"] == "aws:cloudformation:stack"]
    assert [a["displayName"] for a in stacks] == ["ZeroShotClassification"]


@pytest.mark.parametrize("name", ["serverless", "provisioned-vpc"])
def test_the_endpoint_stack_depends_on_the_main_stack_and_not_the_reverse(synth, name):
    s = synth(**CONFIGURATIONS[name])
    artifacts = manifest(s)["artifacts"]
    main_id, endpoint_id = s.stack.artifact_id, s.endpoint.stack.artifact_id
    # Then the cloud assembly (what `cdk deploy --all` orders by) deploys the main stack first
    assert main_id in artifacts[endpoint_id]["dependencies"]
    assert endpoint_id not in artifacts[main_id].get("dependencies", [])
    # and the main template reads nothing of another stack
    reads = [f for f in walk(s.raw) if {"Fn::ImportValue", "Fn::GetStackOutput"} & set(f)]
    assert reads == []


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_the_endpoint_stack_reads_only_long_lived_values_of_the_main_stack(synth, name):
    # A value read from another stack is resolved again only when the reader's template changes: a model's name or
    # an artifact URL would leave the endpoint on a stale model.
    s = synth(**CONFIGURATIONS[name])
    reads = [f["Fn::GetStackOutput"] for f in walk(s.endpoint.raw) if "Fn::GetStackOutput" in f]
    assert reads, "the endpoint's stack reads the main stack's role, key and bucket"
    assert not [f for f in walk(s.endpoint.raw) if "Fn::ImportValue" in f]  # no export locks either stack
    for read in reads:
        assert read["StackName"] == "ZeroShotClassification"
        value = s.raw["Outputs"][read["OutputName"]]["Value"]
        (target,) = [value["Ref"]] if "Ref" in value else [value["Fn::GetAtt"][0]]
        assert s.raw["Resources"][target]["Type"] in LONG_LIVED, (read["OutputName"], value)


@pytest.mark.parametrize("name", ["serverless", "provisioned"])
def test_the_main_stack_publishes_and_watches_the_name_the_endpoint_stack_gives_its_endpoint(synth, name):
    s = synth(**CONFIGURATIONS[name])
    (endpoint,) = [r for r in s.endpoint.raw["Resources"].values() if r["Type"] == "AWS::SageMaker::Endpoint"]
    name_given = endpoint["Properties"]["EndpointName"]
    # Then the name is a plain string, the one endpoint_name computes from the settings
    assert name_given == endpoint_name(s.stack.settings) == "ZeroShotClassification"
    # and it is what zstc reads (the main stack's EndpointName output), and what the endpoint stack reports
    assert s.raw["Outputs"]["EndpointName"]["Value"] == name_given
    assert s.endpoint.raw["Outputs"]["EndpointName"]["Value"] == {
        "Fn::GetAtt": [next(k for k, r in s.endpoint.raw["Resources"].items() if r is endpoint), "EndpointName"]
    }
    # and the endpoint's alarms in the main stack watch that endpoint
    alarms = [r["Properties"] for r in s.raw["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    dimensions = [
        d
        for props in alarms
        if props["AlarmName"].startswith("ZeroShotClassification-Endpoint")
        for d in walk(props)
        if d.get("Name") == "EndpointName"
    ]
    assert len(dimensions) == 3  # 5xx rate: invocations and errors; p99 latency
    assert {d["Value"] for d in dimensions} == {name_given}


@pytest.mark.parametrize(
    "stack_name",
    ["ZeroShotClassification", "a", "team--zero-shot-", "A" * 63, "B" * 64, "prod-" + "x" * 100 + "-classifier"],
)
def test_the_endpoint_name_is_a_valid_sagemaker_name_unique_per_stack_name(stack_name):
    settings = Settings.from_context({"stack_name": stack_name})
    name = endpoint_name(settings)
    assert SAGEMAKER_ENDPOINT_NAME.match(name) and len(name) <= ENDPOINT_NAME_LENGTH
    assert name == endpoint_name(Settings.from_context({"stack_name": stack_name}))  # no clock, no randomness
    if len(stack_name) > ENDPOINT_NAME_LENGTH:
        # cut names differ by their hash suffix
        other = Settings.from_context({"stack_name": stack_name[:-1] + "Z"})
        assert endpoint_name(other) != name
    elif "--" not in stack_name and not stack_name.endswith("-"):
        assert name == stack_name


def test_a_stack_name_too_long_for_the_endpoint_stack_fails_synthesis_naming_the_limit():
    settings = Settings.from_context({"stack_name": "S" * 125})
    with pytest.raises(ConfigError, match=r"'stack_name'.*at most 119 characters.*endpoint_mode=none"):
        endpoint_stack_name(settings)
    assert endpoint_stack_name(Settings.from_context({"stack_name": "S" * 119})) == "S" * 119 + "-Endpoint"


def test_the_synth_summary_lists_both_stacks_in_deploy_order(synth):
    s = synth()
    lines = summarize(s.template_file.parent).splitlines()
    headers = [line for line in lines if not line.startswith(" ")]
    assert headers[0].startswith("ZeroShotClassification: ") and "deployed after" not in headers[0]
    assert headers[1].startswith("ZeroShotClassification-Endpoint: ")
    assert headers[1].endswith("resources (deployed after ZeroShotClassification)")
