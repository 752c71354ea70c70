"""Fixtures for the client's S3 lookups: a versioned bucket in moto and the stack outputs that name it."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from zstc.stack import StackOutputs
from zstc.submit import SubmitState, Watcher


@pytest.fixture
def aws():
    """(s3, sagemaker) clients in moto, with the versioned bucket of :func:`stack_outputs`."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="zstc-versions")
        s3.put_bucket_versioning(Bucket="zstc-versions", VersioningConfiguration={"Status": "Enabled"})
        yield s3, boto3.client("sagemaker", region_name="us-east-1")


@pytest.fixture
def stack_outputs() -> StackOutputs:
    """The stack's outputs as ``zstc`` reads them: the bucket of :func:`aws`, the contract's default prefixes."""
    return StackOutputs(
        stack_name="S", region="us-east-1", bucket="zstc-versions", input_prefix="input/", output_prefix="output/",
        errors_prefix="errors/", model_name="m", queue_url="q", dead_letter_queue_url="d",
        transform_job_prefix="s-batch",
    )  # fmt: skip


@pytest.fixture
def watcher(aws, stack_outputs: StackOutputs):
    """``make(version_id, key="input/a.jsonl")``: a watcher over ``key`` uploaded as version ``version_id`` (None:
    unknown)."""
    s3, sagemaker = aws

    def make(version_id: str | None, key: str = "input/a.jsonl") -> Watcher:
        state = SubmitState(
            file="a.jsonl", sha256="x", stack_name="S", region="us-east-1", bucket=stack_outputs.bucket, key=key,
            options={}, status="uploaded", version_id=version_id,
        )  # fmt: skip
        return Watcher(s3=s3, sagemaker=sagemaker, stack=stack_outputs, state=state)

    return make
