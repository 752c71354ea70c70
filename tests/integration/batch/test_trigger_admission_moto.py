"""Every file the trigger is told of ends as a job or a status record (#13 item 4), against moto: keys too long for
their derived keys, other suffixes, the last receive before the dead-letter queue, forged sizes and deleted files."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber

from functions.batch_trigger.handler import build_handler
from functions.batch_trigger.service import BatchTrigger, Deferred
from tests.integration.batch.batch_moto import BUCKET, PREFIX, REGION, Env
from tests.integration.batch.test_handlers_end_to_end import _context
from zstc_contract.layout import key_bytes, long_key_status_key
from zstc_contract.status import FAILED, NOT_STARTED, StatusRecord


@pytest.fixture
def notices(env: Env) -> str:
    """A queue subscribed to the failure topic (raw delivery): what the trigger publishes."""
    queue = env.sqs.create_queue(QueueName="trigger-notices")["QueueUrl"]
    arn = env.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=env.topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return queue


def received(env: Env, queue: str) -> list[dict]:
    answer = env.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


def trigger(env: Env, *, sagemaker=None, **overrides) -> BatchTrigger:
    """The trigger with the stack's environment (its topic among it) and an SNS client, as the handler builds it."""
    base = env.trigger(env.settings(**overrides), **({"sagemaker": sagemaker} if sagemaker else {}))
    base.sns = boto3.client("sns", region_name=REGION)
    return base


def status(env: Env, key: str) -> StatusRecord:
    return StatusRecord.decode(env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def keys_under(env: Env, prefix: str) -> list[str]:
    return [o["Key"] for o in env.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_a_1015_byte_key_gets_a_status_under_its_hash_and_a_notice_and_no_job(env: Env, notices: str) -> None:
    # Given a stored input whose key is 1,015 bytes: its status key (errors/<relative>.status.json) would be 1,021+
    key = "input/" + "k" * (1015 - len("input/") - len(".jsonl")) + ".jsonl"
    assert key_bytes(key) == 1015
    env.put(key)
    # When the trigger gets its event
    result = trigger(env).process([env.message(key)])
    # Then no job, the message is done, and the status record is under the key's hash, naming the full key
    assert result.failures == {} and env.jobs() == []
    record = status(env, long_key_status_key("errors/", key))
    assert record.input == f"s3://{BUCKET}/{key}" and record.state == FAILED and record.job_status == NOT_STARTED
    assert "1015 bytes" in (record.reason or "")
    # And one notice says so
    (notice,) = received(env, notices)
    assert notice["kind"] == "long-key" and notice["inputs"][0]["input"] == record.input


@pytest.mark.parametrize(("key", "suffix"), [("input/g/data.jsonl.gz", ".jsonl.gz"), ("input/table.csv", ".csv")])
def test_other_suffixes_get_a_not_supported_status(env: Env, notices: str, key: str, suffix: str) -> None:
    env.put(key, b"\x1f\x8b compressed or not, not JSON Lines")
    result = trigger(env).process([env.message(key)])
    assert result.failures == {} and env.jobs() == []
    record = status(env, f"errors/{key[len('input/') :]}.status.json")
    assert record.state == FAILED and (record.reason or "").startswith(f"not supported: {suffix}")
    assert "upload JSON Lines as .jsonl (uncompressed)" in (record.reason or "")
    (notice,) = received(env, notices)
    assert notice["kind"] == "not-supported"


def test_noise_under_input_is_still_ignored(env: Env) -> None:
    # A folder placeholder and a stray status record under input/: no job, no status record, nothing fails
    env.put("input/folder/", b"")
    env.put("input/a.jsonl.status.json", b"{}")
    result = trigger(env).process([env.message("input/folder/"), env.message("input/a.jsonl.status.json")])
    assert result.failures == {} and env.jobs() == [] and keys_under(env, "errors/") == []


def test_a_forged_size_zero_for_a_real_file_is_classified_not_skipped(env: Env) -> None:
    # Given a real, non-empty file whose event body claims 0 bytes
    env.put("input/real.jsonl")
    result = trigger(env).process([env.message("input/real.jsonl", size=0)])
    # Then S3's size counts: a job covers it, and no "Skipped" record is written
    assert result.failures == {}
    (job,) = env.jobs()
    assert env.manifest(job) == ["input/real.jsonl"]
    assert keys_under(env, "errors/") == []


def test_a_really_empty_file_is_skipped_whatever_the_body_claims(env: Env) -> None:
    env.put("input/empty.jsonl", b"")
    result = trigger(env).process([env.message("input/empty.jsonl", size=4096)])
    assert result.failures == {} and env.jobs() == []
    assert status(env, "errors/empty.jsonl.status.json").state == "Skipped"


def test_a_deleted_object_is_skipped_without_a_job_or_status(env: Env) -> None:
    # Given a file deleted after its event was sent (a delete marker on the versioned bucket)
    env.put("input/gone.jsonl")
    message = env.message("input/gone.jsonl")
    env.s3.delete_object(Bucket=BUCKET, Key="input/gone.jsonl")
    # When the trigger gets the event
    result = trigger(env).process([message])
    # Then nothing: no job, no status record, the message is done
    assert result.failures == {} and env.jobs() == [] and keys_under(env, "errors/") == []


def test_a_version_that_no_longer_exists_is_skipped_and_another_version_is_not_claimed(env: Env) -> None:
    # Given an event naming a version that was deleted for good, while the key has another (current) version
    version = env.s3.put_object(Bucket=BUCKET, Key="input/v.jsonl", Body=b'{"inputs": "old"}\n')["VersionId"]
    env.put("input/v.jsonl")
    env.s3.delete_object(Bucket=BUCKET, Key="input/v.jsonl", VersionId=version)
    message = env.message("input/v.jsonl")
    body = json.loads(message.body)
    body["Records"][0]["s3"]["object"]["versionId"] = version
    message.body = json.dumps(body)
    # When the trigger gets the event: the named version is gone, so nothing is claimed (the current one has its own
    # event)
    result = trigger(env).process([message])
    assert result.failures == {} and env.jobs() == []


def _stack_job_running() -> dict:
    return {
        "TransformJobSummaries": [
            {
                "TransformJobName": f"{PREFIX}-{'a' * 24}",
                "TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/x",
                "CreationTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "TransformJobStatus": "InProgress",
            }
        ]
    }


@pytest.mark.parametrize(("receive_count", "gives_up"), [(9, False), (10, True)])
def test_the_last_receive_before_the_dlq_writes_a_status_and_a_notice(
    env: Env, notices: str, receive_count: int, gives_up: bool
) -> None:
    # Given a file deferred again and again (the stack's one job slot is taken), a queue with maxReceiveCount 10
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response("list_transform_jobs", _stack_job_running())
    message = env.message("input/patient.jsonl", receive_count=receive_count)
    # When the trigger gets it for the 9th / 10th (last) time
    with stubber:
        result = trigger(env, sagemaker=sagemaker, MAX_CONCURRENT_JOBS=1, MAX_RECEIVE_COUNT=10).process([message])
    # Then the message is deferred either way (on the last receive it then moves to the dead-letter queue)
    assert isinstance(result.failures[message.message_id], Deferred)
    if not gives_up:
        assert keys_under(env, "errors/") == [] and received(env, notices) == []
        return
    # And on the last receive the file has a status record saying what happened and what to do, and a notice
    record = status(env, "errors/patient.jsonl.status.json")
    assert record.state == FAILED and record.job_status == NOT_STARTED
    reason = record.reason or ""
    assert reason.startswith("gave up after ") and "1 jobs running, the limit is 1" in reason
    assert "dead-letter queue" in reason and "re-drive" in reason
    (notice,) = received(env, notices)
    assert notice["kind"] == "gave-up" and notice["inputs"][0]["input"] == f"s3://{BUCKET}/input/patient.jsonl"


def test_the_handler_publishes_with_the_stacks_environment(env: Env, notices: str) -> None:
    # Given the handler built from the environment the stack declares (TOPIC_ARN, MAX_RECEIVE_COUNT among it)
    environment = env.environment()
    assert environment["TOPIC_ARN"] == env.topic_arn and int(environment["MAX_RECEIVE_COUNT"]) > 1
    handler = build_handler(environment, lambda name, config: boto3.client(name, region_name=REGION, config=config))
    env.put("input/data.csv", b"a,b\n")
    message = env.message("input/data.csv")
    event = {
        "Records": [
            {
                "messageId": message.message_id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": env.queue_arn,
                "awsRegion": REGION,
            }
        ]
    }
    # When it handles the event
    assert handler(event, _context()) == {"batchItemFailures": []}
    # Then the file has its status record and the topic its notice
    assert status(env, "errors/data.csv.status.json").reason.startswith("not supported: .csv")  # type: ignore[union-attr]
    (notice,) = received(env, notices)
    assert notice["kind"] == "not-supported"
