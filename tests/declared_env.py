"""The batch functions' environment for tests, as the stack declares it (``stacks.batch_environment``) for
resources with the tests' names: tests override what they exercise instead of writing an environment by hand, so
each value a test does not name is the stack's (from ``stacks.config.Settings``), and a variable the stack adds
reaches the tests too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stacks.batch_environment import BatchResources, TargetDecision, outcome_environment, trigger_environment
from stacks.config import Settings
from zstc_local.resources import stack_settings

KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:failures"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/q"


def resource_names(*, bucket: str = "data-bucket", job_name_prefix: str = "zeroshot-batch") -> BatchResources:
    """The tests' names of the stack's batch resources (deployed, CloudFormation names them)."""
    return BatchResources(
        bucket_name=bucket, claims_table_name="claims", queue_url=QUEUE_URL, topic_arn=TOPIC_ARN, key_arn=KEY_ARN,
        job_name_prefix=job_name_prefix,
    )  # fmt: skip


def declared_trigger_environment(
    targets: Sequence[TargetDecision],
    *,
    resources: BatchResources | None = None,
    settings: Settings | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The trigger's environment as the stack sets it: ``settings`` (default: cdk.json's context with ``context``
    over it, as ``cdk deploy -c k=v`` reads it), ``resources`` (default: :func:`resource_names`), ``targets``."""
    return trigger_environment(settings or stack_settings(context), resources or resource_names(), targets)


def declared_outcome_environment(
    *,
    resources: BatchResources | None = None,
    settings: Settings | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The job-outcome function's environment as the stack sets it (see :func:`declared_trigger_environment`)."""
    return outcome_environment(settings or stack_settings(context), resources or resource_names())
