"""``Classifier.from_stack`` reads the stack's outputs and the endpoint's kind from AWS (moto), as the CLI does."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from zstc.client import PROVISIONED_PAYLOAD_LIMIT, SERVERLESS_PAYLOAD_LIMIT, Classifier
from zstc.errors import AwsSetupError, ZstcError

pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS")  # moto: the placeholder resource
REGION = "eu-west-1"
OUTPUTS = {
    "BucketName": "data-bucket",
    "InputPrefix": "input/",
    "OutputPrefix": "output/",
    "ErrorsPrefix": "errors/",
    "ModelName": "batch-model",
    "QueueUrl": "https://sqs/q",
    "DeadLetterQueueUrl": "https://sqs/dlq",
    "TransformJobPrefix": "zstc-",
}


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def publish(aws, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def endpoint(aws, name: str, *, serverless: bool, env: dict[str, str] | None = None) -> None:
    sagemaker = aws.client("sagemaker")
    sagemaker.create_model(
        ModelName=f"{name}-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": "123.dkr.ecr.eu-west-1.amazonaws.com/hf:1", "Environment": env or {}},
    )
    variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-model"}
    if serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": 4096, "MaxConcurrency": 5}
    else:
        variant.update({"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1})
    sagemaker.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[variant])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


@pytest.mark.parametrize(
    ("serverless", "limit"), [(True, SERVERLESS_PAYLOAD_LIMIT), (False, PROVISIONED_PAYLOAD_LIMIT)]
)
def test_the_endpoint_and_its_payload_limit_come_from_the_stack(aws, serverless, limit):
    # Given a deployed stack whose outputs name a serverless (or provisioned) endpoint
    endpoint(aws, "zs-endpoint", serverless=serverless, env={"HF_TASK": "zero-shot-classification"})
    publish(aws, "ZeroShotClassification", {**OUTPUTS, "EndpointName": "zs-endpoint"})
    # When the classifier is made from the stack
    classifier = Classifier.from_stack(region=REGION)
    # Then it calls that endpoint with requests under that endpoint kind's limit, several records per request
    assert classifier.endpoint_name == "zs-endpoint"
    assert classifier.payload_limit == limit
    assert not classifier.single_record and classifier.records_per_request > 1
    assert classifier.stack.bucket == "data-bucket"


def test_a_hub_loaded_model_gets_one_record_per_request(aws):
    # model_source=hub: the toolkit's stock handler, which reads one application/json record per request
    endpoint(aws, "hub-endpoint", serverless=True, env={"HF_MODEL_ID": "facebook/bart-large-mnli"})
    publish(aws, "Hub", {**OUTPUTS, "EndpointName": "hub-endpoint"})
    classifier = Classifier.from_stack("Hub", REGION)
    assert classifier.single_record and classifier.records_per_request == 1


def test_a_stack_without_endpoint_still_submits_but_classify_says_what_to_do(aws):
    publish(aws, "BatchOnly", OUTPUTS)
    classifier = Classifier.from_stack("BatchOnly", REGION)
    with pytest.raises(ZstcError, match=r"Stack 'BatchOnly' has no real-time endpoint .*Classifier.local"):
        classifier.classify("text", ["a", "b"])


def test_a_missing_stack_is_one_actionable_line(aws):
    with pytest.raises(AwsSetupError, match=r"No stack named 'Nope' in region eu-west-1"):
        Classifier.from_stack("Nope", REGION)


def synthesized_endpoint_name() -> str:
    """The EndpointName output the main stack publishes with the cdk.json defaults (a plain string, no reference)."""
    from stacks.config import Settings
    from stacks.endpoint import endpoint_name

    context = json.loads((Path(__file__).resolve().parents[3] / "cdk.json").read_text())["context"]
    return endpoint_name(Settings.from_context(context))


def test_the_endpoint_of_the_endpoint_stack_is_found_from_the_main_stack_alone(aws):
    # Given the main stack (its EndpointName output) and the endpoint its -Endpoint stack creates under that name
    name = synthesized_endpoint_name()
    endpoint(aws, name, serverless=True, env={"HF_TASK": "zero-shot-classification"})
    publish(aws, "ZeroShotClassification", {**OUTPUTS, "EndpointName": name})
    # When the classifier is made from the stack, as before the split
    classifier = Classifier.from_stack(region=REGION)
    # Then it calls that endpoint, with the serverless limit read from it
    assert classifier.endpoint_name == name == "ZeroShotClassification"
    assert classifier.payload_limit == SERVERLESS_PAYLOAD_LIMIT


def test_a_rolled_back_endpoint_stack_leaves_the_batch_path_usable(aws):
    # Given the main stack deployed and the endpoint's stack rolled back (no endpoint of that name)
    publish(aws, "ZeroShotClassification", {**OUTPUTS, "EndpointName": synthesized_endpoint_name()})
    # When the classifier is made from the stack (moto's runtime answers any endpoint: requests are not checked here)
    classifier = Classifier.from_stack(region=REGION)
    # Then the batch path is there, and requests would go to the name the endpoint's stack uses, at the 4 MB limit
    assert classifier.stack.bucket == "data-bucket" and classifier.stack.queue_url == "https://sqs/q"
    assert classifier.endpoint_name == "ZeroShotClassification"
    assert classifier.payload_limit == SERVERLESS_PAYLOAD_LIMIT  # the safe default when DescribeEndpoint fails
