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
import statistics
import sys
import time

import boto3
from aws_lambda_powertools import Logger
from moto import mock_aws

from functions.batch_trigger.service import BatchTrigger, Message
from stacks.batch_environment import BATCH_SIZE_WITH_WINDOW, BATCH_SIZE_WITHOUT_WINDOW
from zstc_contract.layout import PREFIXES
from zstc_contract.settings import TriggerSettings
from zstc_local.resources import ResourceNames, create_batch_resources, stack_settings

REGION = "us-east-1"
NAMES = ResourceNames.based_on("zstc-bench")
BUCKET = NAMES.bucket
LINE = b'{"id": "1", "inputs": "The delivery was late", "parameters": {"candidate_labels": ["delivery", "price"]}}\n'


class _NoMetrics:
    """Metrics are not the subject here (Powertools would print an EMF blob every 100 values)."""

    def add_metric(self, **_: object) -> None:
        pass


def run(files: int, window: int) -> dict[str, object]:
    with mock_aws():

        def aws(service: str) -> object:
            return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]

        s3, sqs, sagemaker = aws("s3"), aws("sqs"), aws("sagemaker")
        # The stack's resources and the trigger's environment as deployed with this window (and no job cap to speak
        # of: the benchmark counts jobs, it does not wait for them).
        settings = stack_settings({"batch_window_seconds": window, "batch_max_concurrent_jobs": 100})
        batch = create_batch_resources(aws, settings, NAMES)
        queue = batch.queue_url
        trigger = BatchTrigger(
            TriggerSettings.from_env(batch.trigger_environment()),
            s3=s3,
            dynamodb=aws("dynamodb"),
            sagemaker=sagemaker,
            logger=Logger(service="bench", level="WARNING"),
            metrics=_NoMetrics(),
        )
        keys = [f"input/bench/{i // 100:02d}/file {i:04d}.jsonl" for i in range(files)]
        for key in keys:
            s3.put_object(Bucket=BUCKET, Key=key, Body=LINE)

        batch_size = BATCH_SIZE_WITH_WINDOW if window else BATCH_SIZE_WITHOUT_WINDOW  # the event source's
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
                    s3.get_object(Bucket=BUCKET, Key=f"{PREFIXES.manifests}{job['TransformJobName']}.json")[
                        "Body"
                    ].read()
                )
                covered.extend(PREFIXES.input + e for e in entries[1:])
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
