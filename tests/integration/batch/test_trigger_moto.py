"""The batch trigger against moto (S3, DynamoDB, SageMaker) and botocore Stubber where moto is lenient."""

from __future__ import annotations

import json
import random

import boto3
from botocore.stub import Stubber

from functions.batch_trigger.service import Deferred, WorkFailed
from tests.integration.batch.batch_moto import BUCKET, PREFIX, REGION, Env


def covered(env: Env) -> list[str]:
    """Every input key listed by the manifests of the jobs that exist (one entry per coverage)."""
    return sorted(key for job in env.jobs() for key in env.manifest(job))


def test_duplicate_storm_covers_each_object_exactly_once(env: Env) -> None:
    # Given 100 objects and 10 events for each, shuffled across batches of up to 10 messages
    keys = [f"input/storm/{i:03d}.jsonl" for i in range(100)]
    messages = [env.message(k) for k in keys for _ in range(10)]
    random.Random(1).shuffle(messages)
    trigger = env.trigger()
    # When every batch is processed
    failures = {}
    for start in range(0, len(messages), 10):
        failures.update(trigger.process(messages[start : start + 10]).failures)
    # Then no message failed, and the jobs cover the 100 objects once each
    assert failures == {}
    assert covered(env) == keys


def test_key_round_trip_keeps_the_exact_stored_key(env: Env) -> None:
    # Given objects whose keys need URL decoding
    keys = ["input/red flower.jsonl", "input/c++.jsonl", "input/ü/名.jsonl", "input/a%2Bb.jsonl", "input/5:00.jsonl"]
    for key in keys:
        env.put(key)
    # When their events are processed in one batch
    result = env.trigger().process([env.message(k) for k in keys])
    # Then one job covers exactly the stored keys (which exist)
    assert result.failures == {}
    (job,) = env.jobs()
    assert sorted(env.manifest(job)) == sorted(keys)
    for key in env.manifest(job):
        env.s3.head_object(Bucket=BUCKET, Key=key)


def test_noise_starts_no_job_and_fails_nothing(env: Env) -> None:
    # Given a test event, a .txt, an output object, a manifest and a zero-byte input
    test_event = env.message("input/x.jsonl")
    test_event.body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    messages = [
        test_event,
        env.message("input/notes.txt"),
        env.message("output/a.jsonl.out"),
        env.message("output/a.jsonl"),
        env.message("manifests/x.jsonl"),
        env.message("input/empty.jsonl", size=0),
    ]
    # When they are processed
    result = env.trigger().process(messages)
    # Then nothing fails, no job starts, and the empty input has a status record saying so
    assert result.failures == {} and env.jobs() == []
    status = json.loads(env.s3.get_object(Bucket=BUCKET, Key="errors/empty.jsonl.status.json")["Body"].read())
    assert status["state"] == "Skipped" and "empty" in status["reason"]


def test_window_zero_starts_one_job_per_object(env: Env) -> None:
    keys = [f"input/w0/{i}.jsonl" for i in range(4)]
    result = env.trigger(env.settings(BATCH_WINDOW_SECONDS=0)).process([env.message(k) for k in keys])
    assert result.failures == {}
    assert sorted(len(env.manifest(j)) for j in env.jobs()) == [1, 1, 1, 1]
    assert covered(env) == keys


def test_a_new_version_of_a_key_is_new_work(env: Env) -> None:
    trigger = env.trigger()
    trigger.process([env.message("input/a.jsonl", revision="etag-1")])
    trigger.process([env.message("input/a.jsonl", revision="etag-2")])
    assert len(env.jobs()) == 2


def test_a_crash_after_the_claims_is_finished_by_the_retry(env: Env) -> None:
    # Given an attempt that claimed its objects and then died before writing the manifest
    keys = ["input/c/1.jsonl", "input/c/2.jsonl"]
    messages = [env.message(k) for k in keys]
    trigger = env.trigger()
    trigger.s3 = _failing_put(env.s3)  # the manifest write fails, like a crash right after the claims
    first = trigger.process(messages)
    assert set(first.failures) == {m.message_id for m in messages} and env.jobs() == []
    # When the same messages come back
    retry = env.trigger().process(messages)
    # Then the retry starts the job instead of seeing "already claimed" and dropping the work
    assert retry.failures == {}
    assert covered(env) == keys


def test_a_deferred_job_is_created_from_its_manifest_on_the_retry(env: Env) -> None:
    # Given a batch whose job was deferred: one stack job running and a limit of 1
    env.sagemaker.create_transform_job(**_running_job_request())
    messages = [env.message("input/d/1.jsonl"), env.message("input/d/2.jsonl")]
    capped = env.trigger(env.settings(MAX_CONCURRENT_JOBS=1), sagemaker=_all_in_progress(env.sagemaker))
    deferred = capped.process(messages)
    assert all(isinstance(f, Deferred) for f in deferred.failures.values()) and len(deferred.failures) == 2
    # When the messages come back and a slot is free
    retry = env.trigger(env.settings(MAX_CONCURRENT_JOBS=2)).process(
        [env.message_again(m, receive_count=2) for m in messages]
    )
    # Then the deferred job starts with exactly its objects
    assert retry.failures == {}
    assert sorted(
        k
        for j in env.jobs()
        if j["TransformJobName"] != _running_job_request()["TransformJobName"]
        for k in env.manifest(j)
    ) == ["input/d/1.jsonl", "input/d/2.jsonl"]


def test_quota_and_throttling_defer_only_the_affected_messages(env: Env) -> None:
    # Given one job per object, and SageMaker answering: started, quota, throttled, name in use
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response("list_transform_jobs", {"TransformJobSummaries": []})
    stubber.add_response("create_transform_job", {"TransformJobArn": "arn:aws:sagemaker:us-east-1:1:transform-job/a"})
    stubber.add_client_error(
        "create_transform_job",
        "ResourceLimitExceeded",
        "The account-level service limit 'Number of instances across all transform jobs' is 20 Instances, with "
        "current utilization of 20 Instances and a request delta of 1 Instances. Please contact AWS support to "
        "request an increase for this limit.",
        http_status_code=400,
    )
    stubber.add_client_error("create_transform_job", "ThrottlingException", "Rate exceeded", http_status_code=400)
    stubber.add_client_error(
        "create_transform_job",
        "ValidationException",
        "Job name must be unique within an AWS account and region",
        http_status_code=400,
    )
    keys = [f"input/q/{i}.jsonl" for i in range(4)]
    messages = [env.message(k) for k in keys]
    # When the batch is processed
    with stubber:
        result = env.trigger(env.settings(BATCH_WINDOW_SECONDS=0), sagemaker=sagemaker).process(messages)
    stubber.assert_no_pending_responses()
    # Then exactly the quota and throttled messages go back to the queue, deferred with a backoff
    by_key = dict(zip(keys, messages, strict=True))
    assert set(result.failures) == {by_key["input/q/1.jsonl"].message_id, by_key["input/q/2.jsonl"].message_id}
    assert all(isinstance(f, Deferred) and f.visibility_seconds == 60 for f in result.failures.values())


def test_other_sagemaker_errors_fail_the_message_without_deferring(env: Env) -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response("list_transform_jobs", {"TransformJobSummaries": []})
    stubber.add_client_error("create_transform_job", "ValidationException", "Could not find model zstc-model")
    message = env.message("input/v.jsonl")
    with stubber:
        result = env.trigger(sagemaker=sagemaker).process([message])
    assert isinstance(result.failures[message.message_id], WorkFailed)
    assert "Could not find model" in str(result.failures[message.message_id])


# --- helpers --------------------------------------------------------------------------------------------------------


class _failing_put:
    """An S3 client whose put_object of manifests fails (everything else passes through)."""

    def __init__(self, inner):
        self.inner = inner

    def put_object(self, **kwargs):
        if kwargs["Key"].startswith("manifests/"):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")
        return self.inner.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _running_job_request() -> dict:
    return {
        "TransformJobName": f"{PREFIX}-{'0' * 24}",
        "ModelName": "zstc-model",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/x/"}}},
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/output/"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    }


class _all_in_progress:
    """moto completes jobs at once; this view lists every job as InProgress (a running job holds a slot)."""

    def __init__(self, inner):
        self.inner = inner

    def get_paginator(self, name):
        inner = self.inner

        class Paginator:
            def paginate(self, **kwargs):
                kwargs.pop("StatusEquals", None)
                yield from inner.get_paginator(name).paginate(**kwargs)

        return Paginator()

    def __getattr__(self, name):
        return getattr(self.inner, name)
