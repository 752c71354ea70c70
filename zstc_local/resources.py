"""The stack's batch resources, emulated: one builder for the demo, the tests and the benchmarks.

:func:`create_batch_resources` creates in moto (or any AWS API endpoint the ``aws`` client factory points at) what
``stacks/batch.py`` and ``stacks/storage.py`` declare for the batch path: the versioned data bucket whose
``ObjectCreated`` notifications for every key under ``input/`` go to the queue, the queue with its dead-letter queue
and the stack's ``maxReceiveCount``, the claims table with its TTL attribute, the failure topic, and one model per
container family the configured batch instance types need. The functions' environment then comes from
``stacks.batch_environment`` (:meth:`EmulatedBatch.trigger_environment`), exactly as the stack sets it.

Resource names are the emulation's own (CloudFormation names the deployed ones); prefixes, the notification filter
and the job-name prefix are the stack's declarations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks.batch import job_name_prefix
from stacks.batch_environment import (
    BatchResources,
    TargetDecision,
    max_receive_count,  # re-exported: the DLQ's maxReceiveCount, derived once (also in the trigger's environment)
    outcome_environment,
    queue_visibility_seconds,  # re-exported: the queue's visibility timeout, derived once
    trigger_environment,
)
from stacks.batch_queue import NOTIFICATION_KEY_FILTER
from stacks.config import Settings, has_nvme_storage, is_gpu
from zstc_contract.layout import PREFIXES

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
# A client factory: service name → boto3 client of the (emulated) account.
Clients = Callable[[str], Any]


def stack_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """The stack's settings as ``cdk deploy`` reads them: cdk.json's context, then ``overrides`` (like ``-c k=v``)."""
    context = json.loads((REPO / "cdk.json").read_text(encoding="utf-8"))["context"]
    return Settings.from_context({**context, **(overrides or {})})


def notification_filter_rules() -> list[dict[str, str]]:
    """The S3 → SQS notification's key filter, as stacks/batch_queue.py declares it: every key under ``input/``."""
    return [{"Name": name, "Value": value} for name, value in NOTIFICATION_KEY_FILTER.items()]


@dataclass(frozen=True, kw_only=True)
class ResourceNames:
    """Names of the emulated resources (the deployed ones are named by CloudFormation)."""

    bucket: str
    queue: str
    dead_letter_queue: str
    claims_table: str
    topic: str
    model: str  # the CPU container's model; the GPU one is ``<model>-gpu``

    @classmethod
    def based_on(cls, base: str) -> ResourceNames:
        return cls(
            bucket=f"{base}-data",
            queue=f"{base}-queue",
            dead_letter_queue=f"{base}-dlq",
            claims_table=f"{base}-claims",
            topic=f"{base}-failures",
            model=f"{base}-model",
        )

    def model_for(self, instance_type: str) -> str:
        """The model of ``instance_type``'s container family (the stack has one per family)."""
        return f"{self.model}-gpu" if is_gpu(instance_type) else self.model


@dataclass(frozen=True, kw_only=True)
class EmulatedBatch:
    """The created resources and the settings they were created for."""

    settings: Settings
    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    claims_table: str
    topic_arn: str
    key_arn: str
    job_name_prefix: str
    targets: tuple[TargetDecision, ...]  # most preferred first, as synthesis decides them

    @property
    def model_name(self) -> str:
        """The preferred instance type's model (the stack's ``ModelName`` output)."""
        return self.targets[0].model_name

    @property
    def resources(self) -> BatchResources:
        return BatchResources(
            bucket_name=self.bucket,
            claims_table_name=self.claims_table,
            queue_url=self.queue_url,
            topic_arn=self.topic_arn,
            key_arn=self.key_arn,
            job_name_prefix=self.job_name_prefix,
        )

    def trigger_environment(self) -> dict[str, str]:
        """The trigger's environment, from the stack's one declaration of it."""
        return trigger_environment(self.settings, self.resources, self.targets)

    def outcome_environment(self) -> dict[str, str]:
        """The job-outcome function's environment, from the stack's one declaration of it."""
        return outcome_environment(self.settings, self.resources)


def create_batch_resources(
    aws: Clients,
    settings: Settings,
    names: ResourceNames,
    *,
    key_arn: str | None = None,
    speedup: float = 1.0,
) -> EmulatedBatch:
    """Create the batch path's resources for ``settings``.

    ``key_arn``: the stack key (default: a new KMS key). ``speedup``: AWS seconds per emulated second; the queue's
    visibility timeout is divided by it so that failed messages come back as soon, relatively, as in AWS.
    """
    s3, sqs, dynamodb = aws("s3"), aws("sqs"), aws("dynamodb")
    if key_arn is None:
        key_arn = aws("kms").create_key(Description="zstc emulated stack key")["KeyMetadata"]["Arn"]
    s3.create_bucket(Bucket=names.bucket)
    s3.put_bucket_versioning(Bucket=names.bucket, VersioningConfiguration={"Status": "Enabled"})

    dlq_url = sqs.create_queue(QueueName=names.dead_letter_queue)["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    visibility = max(1, math.ceil(queue_visibility_seconds(settings) / speedup))
    queue_url = sqs.create_queue(
        QueueName=names.queue,
        Attributes={
            "VisibilityTimeout": str(visibility),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count(settings))}
            ),
        },
    )["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    s3.put_bucket_notification_configuration(
        Bucket=names.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": notification_filter_rules()}},
                }
            ]
        },
    )
    dynamodb.create_table(
        TableName=names.claims_table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=names.claims_table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    topic_arn = aws("sns").create_topic(Name=names.topic)["TopicArn"]

    sagemaker = aws("sagemaker")
    targets = tuple(
        TargetDecision(t, names.model_for(t), None if has_nvme_storage(t) else key_arn)
        for t in settings.batch_instance_types
    )
    for model in dict.fromkeys(t.model_name for t in targets):
        sagemaker.create_model(
            ModelName=model,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{names.bucket}-execution",
            PrimaryContainer={
                "Image": "local/huggingface-pytorch-inference:local",
                "ModelDataUrl": f"s3://{names.bucket}/{PREFIXES.models}model.tar.gz",
            },
        )
    return EmulatedBatch(
        settings=settings,
        bucket=names.bucket,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_queue_url=dlq_url,
        claims_table=names.claims_table,
        topic_arn=topic_arn,
        key_arn=key_arn,
        job_name_prefix=job_name_prefix(settings.stack_name),
        targets=targets,
    )


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
