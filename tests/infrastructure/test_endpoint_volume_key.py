"""The endpoint config's volume key: the stack key, except where SageMaker refuses one (local instance storage).

Built on the endpoint construct alone (no app, no nag), so every case is cheap; the whole stack's serverless,
provisioned and GPU cases are in test_foundation.py.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk.assertions import Template

from stacks.config import Settings
from stacks.endpoint import InferenceEndpoint


def endpoint_config(settings: Settings) -> dict[str, Any]:
    stack = cdk.Stack()
    model = sagemaker.CfnModel(stack, "Model", execution_role_arn="arn:aws:iam::123456789012:role/sagemaker")
    InferenceEndpoint(
        stack, "Endpoint", settings=settings, model=model, key=kms.Key(stack, "Key"), bucket=s3.Bucket(stack, "Data")
    )
    (config,) = Template.from_stack(stack).find_resources("AWS::SageMaker::EndpointConfig").values()
    return config["Properties"]


@pytest.mark.parametrize(
    ("instance_type", "keyed"),
    [("ml.m5.xlarge", True), ("ml.inf2.xlarge", True), ("ml.g5.xlarge", False), ("ml.c6id.xlarge", False)],
)
def test_a_provisioned_endpoint_has_the_volume_key_unless_its_instances_have_local_storage(instance_type, keyed):
    config = endpoint_config(Settings(endpoint_mode="provisioned", endpoint_instance_type=instance_type))

    assert ("KmsKeyId" in config) is keyed
    assert config["ProductionVariants"][0]["InstanceType"] == instance_type


def test_a_serverless_endpoint_always_has_the_key_whatever_endpoint_instance_type_says():
    # SageMaker encrypts the serverless endpoint's copy of the image with it; no instance type applies.
    config = endpoint_config(Settings(endpoint_mode="serverless", endpoint_instance_type="ml.g5.xlarge"))

    assert "KmsKeyId" in config
    assert "InstanceType" not in config["ProductionVariants"][0]
