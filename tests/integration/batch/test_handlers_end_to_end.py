"""Full passes through the Lambda entry points: moto S3 → SQS notification → trigger handler → job → outcome."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config

from functions.batch_trigger.handler import TriggerFunction
from functions.batch_trigger.handler import build_handler as build_trigger
from functions.job_outcome.handler import OutcomeFunction
from functions.job_outcome.handler import build_handler as build_outcome
from tests.integration.batch.batch_moto import BUCKET, PREFIX, REGION, Env


def _context() -> SimpleNamespace:
    return SimpleNamespace(
        function_name="batch-trigger",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:batch-trigger",
        aws_request_id="req-1",
    )


def _clients(service: str, config: Config) -> object:
    return boto3.client(service, region_name=REGION, config=config)


@pytest.fixture
def trigger_function(env: Env) -> TriggerFunction:
    """The trigger's Lambda handler, built from the environment the stack declares (resources in moto)."""
    return build_trigger(env.environment(MAX_CONCURRENT_JOBS=10), _clients)


def _lambda_event(env: Env) -> dict:
    """Receive what is in the queue and shape it as Lambda's SQS event source mapping does."""
    records = []
    while True:
        answer = env.sqs.receive_message(
            QueueUrl=env.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=30
        )
        if not answer.get("Messages"):
            break
        for m in answer["Messages"]:
            records.append(
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": env.queue_arn,
                    "awsRegion": "us-east-1",
                }
            )
    return {"Records": records}


def test_a_full_pass_from_s3_through_sqs_starts_one_job(env: Env, trigger_function) -> None:
    # Given the bucket notifies the queue, and files (plus noise) are dropped
    keys = ["input/red flower.jsonl", "input/c++.jsonl", "input/ü/名.jsonl", "input/a%2Bb.jsonl", "input/5:00.jsonl"]
    for key in keys:
        env.put(key)
    env.put("input/notes.txt")
    env.put("output/x.jsonl.out")
    event = _lambda_event(env)
    assert any("s3:TestEvent" in r["body"] for r in event["Records"])  # moto sends S3's test event first
    # When the handler gets the batch
    response = trigger_function(event, _context())
    # Then nothing goes back to the queue and one job covers exactly the dropped .jsonl files
    assert response == {"batchItemFailures": []}
    (job,) = env.jobs()
    assert sorted(env.manifest(job)) == sorted(keys)
    assert job["TransformInput"]["SplitType"] == "Line" and job["TransformOutput"]["AssembleWith"] == "Line"
    # And the same events delivered again start nothing new
    env.s3.put_object(Bucket=BUCKET, Key="output/ignored.jsonl", Body=b"x")  # outputs never trigger work
    assert trigger_function(event, _context()) == {"batchItemFailures": []}
    assert len(env.jobs()) == 1


def test_deferred_messages_report_failures_and_get_a_backoff(env: Env, trigger_function, monkeypatch) -> None:
    # Given SageMaker refuses every job for quota
    env.put("input/quota.jsonl")
    event = _lambda_event(env)
    from botocore.exceptions import ClientError

    def refuse(**_kwargs):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "quota 0"}}, "CreateTransformJob")

    sagemaker = trigger_function.client("sagemaker")
    monkeypatch.setattr(sagemaker, "create_transform_job", refuse)
    changed: list[dict] = []
    sqs = trigger_function.client("sqs")
    original = sqs.change_message_visibility_batch
    monkeypatch.setattr(
        sqs, "change_message_visibility_batch", lambda **kw: (changed.extend(kw["Entries"]), original(**kw))[1]
    )
    # When the handler runs
    response = trigger_function(event, _context())
    # Then only the file's message returns to the queue (the test event is done), with the first backoff step
    file_message = next(r for r in event["Records"] if "quota.jsonl" in r["body"])
    assert response == {"batchItemFailures": [{"itemIdentifier": file_message["messageId"]}]}
    assert [e["VisibilityTimeout"] for e in changed] == [60]


@pytest.fixture
def outcome_function(env: Env) -> OutcomeFunction:
    """The job-outcome Lambda handler, built from the environment the stack declares; its topic feeds a probe."""
    queue = env.sqs.create_queue(QueueName="failures-probe")["QueueUrl"]
    arn = env.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns = boto3.client("sns", region_name=REGION)
    sns.subscribe(TopicArn=env.topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    env.failures_probe = queue  # type: ignore[attr-defined]
    return build_outcome(env.outcome_environment(), _clients)


def _job_event(name: str, status: str, reason: str | None = None) -> dict:
    detail = {
        "TransformJobName": name,
        "TransformJobStatus": status,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/manifests/{name}.json"}
            }
        },
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/output/"},
    }
    if reason:
        detail["FailureReason"] = reason
    return {
        "detail-type": "SageMaker Transform Job State Change",
        "source": "aws.sagemaker",
        "detail": detail,
        "time": "2026-11-20T10:13:20Z",
    }


def test_job_outcome_writes_status_records_per_file_and_notifies_failures(env: Env, outcome_function) -> None:
    # Given a job over two files of which SageMaker wrote only the first one's output (then failed)
    from functions.batch_trigger.logic import S3Object, job_name

    objects = [S3Object(BUCKET, "input/a/ok.jsonl", "e-1"), S3Object(BUCKET, "input/a/bad.jsonl", "e-1")]
    name = job_name(PREFIX, objects)
    manifest = [{"prefix": f"s3://{BUCKET}/input/"}, "a/ok.jsonl", "a/bad.jsonl"]
    env.s3.put_object(Bucket=BUCKET, Key=f"manifests/{name}.json", Body=json.dumps(manifest).encode())
    env.s3.put_object(
        Bucket=BUCKET,
        Key="output/a/ok.jsonl.out",
        Body=b'{"id": 1, "sequence": "s", "labels": ["x"], "scores": [1.0]}\n{"id": 2, "error": "no labels"}\n',
    )
    # When the Failed event arrives
    result = outcome_function(_job_event(name, "Failed", "ClientError: bad record in a/bad.jsonl"), _context())
    # Then each file has its status record where it belongs
    ok = json.loads(env.s3.get_object(Bucket=BUCKET, Key="output/a/ok.jsonl.status.json")["Body"].read())
    bad = json.loads(env.s3.get_object(Bucket=BUCKET, Key="errors/a/bad.jsonl.status.json")["Body"].read())
    assert ok["state"] == "Succeeded" and ok["records"] == 2 and ok["record_errors"] == 1 and ok["job_name"] == name
    assert bad["state"] == "Failed" and "bad record in a/bad.jsonl" in bad["reason"]
    assert result["files_failed"] == 1
    # And the failure is published once on the topic
    (notice,) = env.sqs.receive_message(QueueUrl=env.failures_probe, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(notice["Body"])["failed_inputs"] == [f"s3://{BUCKET}/input/a/bad.jsonl"]


def test_job_outcome_ignores_other_stacks_jobs(env: Env, outcome_function) -> None:
    result = outcome_function(_job_event("someone-else-0123", "Failed"), _context())
    assert result["ignored"] is True
