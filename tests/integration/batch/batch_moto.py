"""The batch path in moto: bucket, claims table, queue + DLQ, a model, and helpers to feed the trigger."""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics

from functions.batch_trigger.logic import TriggerSettings
from functions.batch_trigger.service import BatchTrigger, Message

REGION = "us-east-1"
BUCKET = "zstc-batch-test"
PREFIX = "zstc-test"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
CPU_TARGET = {"instance_type": "ml.m5.xlarge", "model_name": "zstc-model", "volume_kms_key": KEY_ARN}
GPU_TARGET = {"instance_type": "ml.g4dn.xlarge", "model_name": "zstc-model-gpu", "volume_kms_key": None}
# What the stack sets on the trigger: the instance types in order, each with its model and volume-key decision.
ONE_TARGET = json.dumps([CPU_TARGET])
GPU_THEN_CPU = json.dumps([GPU_TARGET, CPU_TARGET])


class Env:
    """The AWS side of the batch path in moto, plus helpers to feed the trigger."""

    def __init__(self) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dynamodb = boto3.client("dynamodb", region_name=REGION)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET)
        self.dlq_url = self.sqs.create_queue(QueueName="batch-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.queue_url = self.sqs.create_queue(
            QueueName="batch",
            Attributes={
                "VisibilityTimeout": "0",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.dynamodb.create_table(
            TableName="claims",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for model in ("zstc-model", "zstc-model-gpu"):
            self.sagemaker.create_model(
                ModelName=model,
                ExecutionRoleArn="arn:aws:iam::123456789012:role/execution",
                PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hf:latest"},
            )
        self.message_count = 0

    def settings(self, **overrides: Any) -> TriggerSettings:
        env = {
            "BUCKET_NAME": BUCKET,
            "CLAIMS_TABLE": "claims",
            "QUEUE_URL": self.queue_url,
            "JOB_NAME_PREFIX": PREFIX,
            "BATCH_TARGETS": ONE_TARGET,
            "KMS_KEY_ARN": KEY_ARN,
            "MAX_CONCURRENT_JOBS": "100",
        }
        env.update({k: str(v) for k, v in overrides.items()})
        return TriggerSettings.from_env(env)

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
        """An SQS message as S3 sends it for ``key`` (URL-encoded the way S3 encodes keys)."""
        from urllib.parse import quote_plus

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
