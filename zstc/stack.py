"""Find the deployed stack and read what the command line needs from its CloudFormation outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from zstc.errors import AwsSetupError, aws_errors
from zstc_contract import layout

DEFAULT_STACK_NAME = "ZeroShotClassification"
REQUIRED_OUTPUTS = (
    "BucketName",
    "InputPrefix",
    "OutputPrefix",
    "ErrorsPrefix",
    "ModelName",
    "QueueUrl",
    "DeadLetterQueueUrl",
    "TransformJobPrefix",
)
# Standard retries with a few attempts: a CLI should ride out throttling, not hang for minutes.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, user_agent_extra="zstc")


@dataclass(frozen=True, kw_only=True)
class StackOutputs:
    """The deployed stack's contract with its users (CfnOutput keys in brackets)."""

    stack_name: str
    region: str
    bucket: str  # BucketName
    input_prefix: str  # InputPrefix, e.g. "input/"
    output_prefix: str  # OutputPrefix, e.g. "output/"
    errors_prefix: str  # ErrorsPrefix, e.g. "errors/"
    model_name: str  # ModelName
    queue_url: str  # QueueUrl
    dead_letter_queue_url: str  # DeadLetterQueueUrl
    transform_job_prefix: str  # TransformJobPrefix
    endpoint_name: str | None = None  # EndpointName: only when the stack has an endpoint
    dashboard_url: str | None = None  # DashboardUrl

    @classmethod
    def from_outputs(cls, stack_name: str, region: str, outputs: dict[str, str]) -> StackOutputs:
        missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
        if missing:
            raise AwsSetupError(
                f"Stack '{stack_name}' has no output {', '.join(missing)}: it is not a zero-shot classification "
                "stack, or an old version of it. Pass --stack NAME, or redeploy with `make deploy`."
            )
        return cls(
            stack_name=stack_name,
            region=region,
            bucket=outputs["BucketName"],
            input_prefix=_as_prefix(outputs["InputPrefix"]),
            output_prefix=_as_prefix(outputs["OutputPrefix"]),
            errors_prefix=_as_prefix(outputs["ErrorsPrefix"]),
            model_name=outputs["ModelName"],
            queue_url=outputs["QueueUrl"],
            dead_letter_queue_url=outputs["DeadLetterQueueUrl"],
            transform_job_prefix=outputs["TransformJobPrefix"],
            endpoint_name=outputs.get("EndpointName") or None,
            dashboard_url=outputs.get("DashboardUrl") or None,
        )

    def output_key(self, input_key: str) -> str:
        """``input/a/b.jsonl`` -> ``output/a/b.jsonl.out`` (where SageMaker batch transform writes it)."""
        return layout.output_key(self.output_prefix, self.relative(input_key))

    def status_keys(self, input_key: str) -> tuple[str, str]:
        """(success, failure) locations of the status record the job-outcome function writes for an input."""
        relative = self.relative(input_key)
        return layout.status_key(self.output_prefix, relative), layout.status_key(self.errors_prefix, relative)

    def relative(self, input_key: str) -> str:
        return layout.relative_key(input_key, self.input_prefix)


def _as_prefix(value: str) -> str:
    value = value.lstrip("/")
    return value if value.endswith("/") else value + "/"


def session(region: str | None) -> boto3.session.Session:
    """A boto3 session in ``region`` (or the configured default). Fails with an actionable line if none is set."""
    with aws_errors(region):
        result = boto3.session.Session(region_name=region)
    if not result.region_name:
        raise AwsSetupError("No AWS region configured. Pass --region (e.g. --region us-east-1) or set AWS_REGION.")
    return result


def client(aws: boto3.session.Session, service: str) -> Any:
    return aws.client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


def find_stack(aws: boto3.session.Session, stack_name: str = DEFAULT_STACK_NAME) -> StackOutputs:
    """Read the stack's outputs with CloudFormation DescribeStacks."""
    region = aws.region_name or "?"
    cloudformation = client(aws, "cloudformation")
    try:
        with aws_errors(region):
            stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if "does not exist" in message:
            raise AwsSetupError(
                f"No stack named '{stack_name}' in region {region}. Deploy it with `make deploy`, or pass "
                "--stack NAME / --region REGION where it is deployed."
            ) from error
        raise
    if not stacks:
        raise AwsSetupError(f"No stack named '{stack_name}' in region {region}. Deploy it with `make deploy`.")
    stack = stacks[0]
    status = stack.get("StackStatus", "")
    if status.endswith("_IN_PROGRESS") and not status.startswith("UPDATE"):
        raise AwsSetupError(f"Stack '{stack_name}' is {status}. Wait for the deployment to finish and try again.")
    if status in ("CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "DELETE_COMPLETE"):
        raise AwsSetupError(
            f"Stack '{stack_name}' is {status}: it did not deploy. See its events in the CloudFormation console, "
            "fix the cause and run `make deploy` again."
        )
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
    return StackOutputs.from_outputs(stack_name, region, outputs)
