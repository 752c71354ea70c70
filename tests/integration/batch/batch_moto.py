"""The batch path in moto, built by the emulation's builder (zstc_local.resources), and helpers to feed the trigger."""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics

from functions.batch_trigger.service import BatchTrigger, Message
from zstc_contract.settings import TriggerSettings
from zstc_local.resources import ResourceNames, create_batch_resources, stack_settings

REGION = "us-east-1"
BUCKET = "zstc-batch-test"
PREFIX = "zstc-test"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
NAMES = ResourceNames(
    bucket=BUCKET, queue="batch", dead_letter_queue="batch-dlq", claims_table="claims", topic="failures",
    model="zstc-model",
)  # fmt: skip
CPU_TARGET = {"instance_type": "ml.m5.xlarge", "model_name": "zstc-model", "volume_kms_key": KEY_ARN}
GPU_TARGET = {"instance_type": "ml.g4dn.xlarge", "model_name": "zstc-model-gpu", "volume_kms_key": None}
# What the stack sets on the trigger: the instance types in order, each with its model and volume-key decision.
ONE_TARGET = json.dumps([CPU_TARGET])
GPU_THEN_CPU = json.dumps([GPU_TARGET, CPU_TARGET])
# The resources of a stack configured with a GPU type first, then the CPU type (one model per container family).
SETTINGS = stack_settings({"batch_instance_types": "ml.g4dn.xlarge,ml.m5.xlarge"})


class Env:
    """The AWS side of the batch path in moto, plus helpers to feed the trigger."""

    def __init__(self) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.batch = create_batch_resources(
            lambda service: boto3.client(service, region_name=REGION), SETTINGS, NAMES, key_arn=KEY_ARN
        )
        self.queue_url = self.batch.queue_url
        self.queue_arn = self.batch.queue_arn
        self.dlq_url = self.batch.dead_letter_queue_url
        self.topic_arn = self.batch.topic_arn
        self.message_count = 0

    def environment(self, **overrides: Any) -> dict[str, str]:
        """The trigger's environment as the stack declares it, on one target (CPU), with the tests' overrides."""
        env = {
            **self.batch.trigger_environment(),
            "JOB_NAME_PREFIX": PREFIX,
            "BATCH_TARGETS": ONE_TARGET,
            "MAX_CONCURRENT_JOBS": "100",
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def outcome_environment(self, **overrides: Any) -> dict[str, str]:
        env = {**self.batch.outcome_environment(), "JOB_NAME_PREFIX": PREFIX}
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def settings(self, **overrides: Any) -> TriggerSettings:
        return TriggerSettings.from_env(self.environment(**overrides))

    def trigger(self, settings: TriggerSettings | None = None, **clients: Any) -> BatchTrigger:
        return BatchTrigger(
            settings or self.settings(),
            s3=clients.get("s3", self.s3),
            dynamodb=clients.get("dynamodb", self.dynamodb),
            sagemaker=clients.get("sagemaker", self.sagemaker),
            logger=Logger(service="batch-trigger-test"),
            metrics=Metrics(namespace="ZeroShotClassification", service="batch-trigger-test"),
            clock=clients.get("clock", lambda: 1_800_000_000.0),
        )

    def put(self, key: str, body: bytes = b'{"inputs": "a", "parameters": {"candidate_labels": ["x", "y"]}}\n'):
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def message(self, key: str, *, size: int = 10, revision: str = "etag-1", receive_count: int = 1) -> Message:
        """An SQS message as S3 sends it for ``key`` (URL-encoded the way S3 encodes keys).

        S3 sends events for objects it stores, and the trigger confirms each (HeadObject): an input key the test has
        not put yet is put first (zero bytes for ``size=0``, else a one-record file)."""
        from urllib.parse import quote_plus

        if key.startswith("input/") and not key.endswith("/") and not self.exists(key):
            if size == 0:
                self.put(key, b"")
            else:
                self.put(key)
        self.message_count += 1
        body = {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": BUCKET},
                        "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": revision},
                    },
                }
            ]
        }
        return Message(
            message_id=f"m-{self.message_count}",
            receipt_handle=f"rh-{self.message_count}",
            receive_count=receive_count,
            body=json.dumps(body),
        )

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=BUCKET, Key=key)
        except self.s3.exceptions.ClientError:
            return False
        return True

    def message_again(self, message: Message, *, receive_count: int) -> Message:
        """The same SQS message delivered again (same id, new receipt handle)."""
        return Message(message.message_id, message.receipt_handle + "-again", receive_count, message.body)

    def jobs(self) -> list[dict[str, Any]]:
        names = [
            j["TransformJobName"]
            for page in self.sagemaker.get_paginator("list_transform_jobs").paginate()
            for j in page["TransformJobSummaries"]
        ]
        return [self.sagemaker.describe_transform_job(TransformJobName=n) for n in names]

    def manifest(self, job: dict[str, Any]) -> list[str]:
        uri = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, key = uri[len("s3://") :].split("/", 1)
        entries = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        prefix = entries[0]["prefix"][len(f"s3://{bucket}/") :]
        return [prefix + e for e in entries[1:]]
