"""Batch path benchmark (moto): drop N files, run the trigger as Lambda would, report jobs and handler time.

For N = 1, 100, 1000 files and a batching window of 60 s and 0 s: objects are PUT into a moto bucket that notifies
a moto SQS queue (as S3 does); the queue is drained into Lambda-sized batches (≤ 1,000 messages with a window,
≤ 10 without); each batch goes through the trigger (claims in DynamoDB, manifests in S3, CreateTransformJob in
moto). Reported: jobs started, Lambda invocations, median handler time per message, and a check that every file
is covered by exactly one job. Figures are moto's (in-process, no network): they compare configurations, they do
not predict AWS latencies.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script: the repository packages (functions, zstc_contract)
for name, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
}.items():
    os.environ.setdefault(name, value)

import boto3  # noqa: E402
from aws_lambda_powertools import Logger  # noqa: E402
from moto import mock_aws  # noqa: E402

from functions.batch_trigger.logic import TriggerSettings  # noqa: E402
from functions.batch_trigger.service import BatchTrigger, Message  # noqa: E402

BUCKET = "zstc-bench"
LINE = b'{"id": "1", "inputs": "The delivery was late", "parameters": {"candidate_labels": ["delivery", "price"]}}\n'


class _NoMetrics:
    """Metrics are not the subject here (Powertools would print an EMF blob every 100 values)."""

    def add_metric(self, **_: object) -> None:
        pass


def run(files: int, window: int) -> dict[str, object]:
    with mock_aws():
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        ddb = boto3.client("dynamodb")
        sagemaker = boto3.client("sagemaker")
        s3.create_bucket(Bucket=BUCKET)
        queue = sqs.create_queue(QueueName="batch")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        rules = [{"Name": "prefix", "Value": "input/"}, {"Name": "suffix", "Value": ".jsonl"}]
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
                ]
            },
        )
        ddb.create_table(
            TableName="claims",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sagemaker.create_model(
            ModelName="m",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
            PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hf:1"},
        )
        settings = TriggerSettings.from_env(
            {
                "BUCKET_NAME": BUCKET,
                "CLAIMS_TABLE": "claims",
                "QUEUE_URL": queue,
                "JOB_NAME_PREFIX": "bench-batch",
                "BATCH_TARGETS": '[{"instance_type": "ml.m5.xlarge", "model_name": "m", "volume_kms_key": null}]',
                "KMS_KEY_ARN": "arn:aws:kms:us-east-1:123456789012:key/1",
                "MAX_CONCURRENT_JOBS": "100",
                "BATCH_WINDOW_SECONDS": str(window),
            }
        )
        trigger = BatchTrigger(
            settings,
            s3=s3,
            dynamodb=ddb,
            sagemaker=sagemaker,
            logger=Logger(service="bench", level="WARNING"),
            metrics=_NoMetrics(),
        )
        keys = [f"input/bench/{i // 100:02d}/file {i:04d}.jsonl" for i in range(files)]
        for key in keys:
            s3.put_object(Bucket=BUCKET, Key=key, Body=LINE)

        batch_size = 1000 if window else 10
        per_message: list[float] = []
        invocations = 0
        while True:
            batch: list[Message] = []
            while len(batch) < batch_size:
                got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"])
                if not got.get("Messages"):
                    break
                for m in got["Messages"]:
                    batch.append(Message(m["MessageId"], m["ReceiptHandle"], 1, m["Body"]))
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            if not batch:
                break
            started = time.perf_counter()
            result = trigger.process(batch)
            elapsed = time.perf_counter() - started
            assert not result.failures, result.failures
            invocations += 1
            per_message.append(elapsed / len(batch))

        covered: list[str] = []
        jobs = 0
        for page in sagemaker.get_paginator("list_transform_jobs").paginate():
            for job in page["TransformJobSummaries"]:
                jobs += 1
                entries = json.loads(
                    s3.get_object(Bucket=BUCKET, Key=f"manifests/{job['TransformJobName']}.json")["Body"].read()
                )
                covered.extend("input/" + e for e in entries[1:])
        return {
            "files": files,
            "window_s": window,
            "jobs": jobs,
            "invocations": invocations,
            "median_ms_per_message": round(1000 * statistics.median(per_message), 2),
            "exactly_once": sorted(covered) == sorted(keys),
        }


def main() -> None:
    rows = [run(n, w) for w in (60, 0) for n in (1, 100, 1000)]
    print(
        "| files | window (s) | jobs started | Lambda invocations | median handler time per message (ms) | "
        "every file covered exactly once |"
    )
    print("|---:|---:|---:|---:|---:|:---:|")
    for r in rows:
        print(
            f"| {r['files']} | {r['window_s']} | {r['jobs']} | {r['invocations']} | {r['median_ms_per_message']} | "
            f"{'yes' if r['exactly_once'] else 'NO'} |"
        )
    if not all(r["exactly_once"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
