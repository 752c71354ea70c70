"""Instance-type fallback of the trigger: SageMaker's quota answers (botocore Stubber) with moto's S3 and DynamoDB.

The configured types are ``ml.g4dn.xlarge`` (GPU model, no volume key: NVMe) then ``ml.m5.xlarge`` (CPU model,
volume key). The quota texts are SageMaker's account-level service-limit sentences.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.stub import ANY, Stubber

from functions.batch_trigger.logic import refusal_pk
from functions.batch_trigger.service import Deferred
from tests.integration.batch.batch_moto import BUCKET, GPU_THEN_CPU, KEY_ARN, REGION, Env

NOW = 1_800_000_000


def limit_text(quota: str, limit: int, used: int, delta: int = 1) -> str:
    return (
        f"The account-level service limit '{quota}' is {limit} Instances, with current utilization of {used} "
        f"Instances and a request delta of {delta} Instances. Please contact AWS support to request an increase "
        "for this limit."
    )


GPU_QUOTA_ZERO = limit_text("ml.g4dn.xlarge for transform job usage", 0, 0)
CPU_QUOTA_ZERO = limit_text("ml.m5.xlarge for transform job usage", 0, 0)
GPU_QUOTA_IN_USE = limit_text("ml.g4dn.xlarge for transform job usage", 1, 1)
ALL_TRANSFORM_INSTANCES = limit_text("Number of instances across all transform jobs", 20, 20)


def create_params(instance_type: str, model: str, volume_key: str | None) -> dict[str, Any]:
    resources: dict[str, Any] = {"InstanceType": instance_type, "InstanceCount": 1}
    if volume_key:
        resources["VolumeKmsKeyId"] = volume_key
    return {
        "TransformJobName": ANY,
        "ModelName": model,
        "MaxConcurrentTransforms": ANY,
        "MaxPayloadInMB": ANY,
        "BatchStrategy": ANY,
        "ModelClientConfig": ANY,
        "TransformInput": ANY,
        "TransformOutput": ANY,
        "TransformResources": resources,
        "DataProcessing": ANY,
        "Tags": ANY,
    }


GPU_PARAMS = create_params("ml.g4dn.xlarge", "zstc-model-gpu", None)
CPU_PARAMS = create_params("ml.m5.xlarge", "zstc-model", KEY_ARN)
STARTED = {"TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/x"}


def stubbed() -> tuple[Any, Stubber]:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response("list_transform_jobs", {"TransformJobSummaries": []})
    return sagemaker, stubber


def run(env: Env, sagemaker: Any, stubber: Stubber, keys: list[str], *, now: int = NOW, **settings: Any):
    messages = [env.message(k) for k in keys]
    trigger = env.trigger(
        env.settings(BATCH_TARGETS=GPU_THEN_CPU, **settings), sagemaker=sagemaker, clock=lambda: float(now)
    )
    with stubber:
        result = trigger.process(messages)
    stubber.assert_no_pending_responses()
    return result, messages


def refusal_row(env: Env, instance_type: str) -> dict[str, Any] | None:
    return env.dynamodb.get_item(TableName="claims", Key={"pk": {"S": refusal_pk(instance_type)}}).get("Item")


def test_quota_zero_on_the_first_type_runs_the_job_on_the_second(env: Env) -> None:
    # Given a GPU quota of 0 (new account) and CPU quota available
    sagemaker, stubber = stubbed()
    stubber.add_client_error("create_transform_job", "ResourceLimitExceeded", GPU_QUOTA_ZERO, 400, None, GPU_PARAMS)
    stubber.add_response("create_transform_job", STARTED, CPU_PARAMS)
    # When a file arrives
    result, _ = run(env, sagemaker, stubber, ["input/a.jsonl"])
    # Then the same job started on the CPU type with the CPU model and the volume key, and nothing is retried
    assert result.failures == {} and len(result.jobs_started) == 1
    # and the refusal is remembered until the TTL (6 hours by default)
    row = refusal_row(env, "ml.g4dn.xlarge")
    assert row is not None and int(row["expires_at"]["N"]) == NOW + 6 * 3600
    assert refusal_row(env, "ml.m5.xlarge") is None


def test_a_remembered_refusal_skips_the_type_for_later_files(env: Env) -> None:
    # Given a refusal of the GPU type remembered by an earlier invocation
    env.dynamodb.put_item(
        TableName="claims",
        Item={"pk": {"S": refusal_pk("ml.g4dn.xlarge")}, "expires_at": {"N": str(NOW + 600)}},
    )
    # When the next file arrives, SageMaker is asked for the CPU type only
    sagemaker, stubber = stubbed()
    stubber.add_response("create_transform_job", STARTED, CPU_PARAMS)
    result, _ = run(env, sagemaker, stubber, ["input/b.jsonl"])
    assert result.failures == {} and len(result.jobs_started) == 1


def test_an_expired_refusal_not_yet_deleted_by_dynamodb_is_ignored(env: Env) -> None:
    env.dynamodb.put_item(
        TableName="claims",
        Item={"pk": {"S": refusal_pk("ml.g4dn.xlarge")}, "expires_at": {"N": str(NOW - 1)}},
    )
    sagemaker, stubber = stubbed()
    stubber.add_response("create_transform_job", STARTED, GPU_PARAMS)
    result, _ = run(env, sagemaker, stubber, ["input/c.jsonl"])
    assert result.failures == {} and len(result.jobs_started) == 1


def test_the_concurrent_limit_is_retried_not_moved(env: Env) -> None:
    # Given SageMaker's account-wide limit on transform instances (not about one instance type)
    sagemaker, stubber = stubbed()
    stubber.add_client_error(
        "create_transform_job", "ResourceLimitExceeded", ALL_TRANSFORM_INSTANCES, 400, None, GPU_PARAMS
    )
    # When a file arrives
    result, messages = run(env, sagemaker, stubber, ["input/d.jsonl"])
    # Then its message is deferred (back to the queue with a backoff); no other type was tried, nothing remembered
    assert isinstance(result.failures[messages[0].message_id], Deferred)
    assert result.jobs_started == [] and refusal_row(env, "ml.g4dn.xlarge") is None


def test_a_quota_that_is_only_in_use_waits_for_the_preferred_type(env: Env) -> None:
    sagemaker, stubber = stubbed()
    stubber.add_client_error("create_transform_job", "ResourceLimitExceeded", GPU_QUOTA_IN_USE, 400, None, GPU_PARAMS)
    result, messages = run(env, sagemaker, stubber, ["input/e.jsonl"])
    assert isinstance(result.failures[messages[0].message_id], Deferred)
    assert refusal_row(env, "ml.g4dn.xlarge") is None


def test_every_type_refused_writes_a_clear_failure_status_and_finishes_the_message(env: Env) -> None:
    # Given a quota of 0 for both configured types
    sagemaker, stubber = stubbed()
    stubber.add_client_error("create_transform_job", "ResourceLimitExceeded", GPU_QUOTA_ZERO, 400, None, GPU_PARAMS)
    stubber.add_client_error("create_transform_job", "ResourceLimitExceeded", CPU_QUOTA_ZERO, 400, None, CPU_PARAMS)
    # When a file arrives
    result, _ = run(env, sagemaker, stubber, ["input/sub/f.jsonl"])
    # Then no job started, the message is done, and the file's status record names both quotas and the fix
    assert result.failures == {} and result.jobs_started == []
    status = json.loads(env.s3.get_object(Bucket=BUCKET, Key="errors/sub/f.jsonl.status.json")["Body"].read())
    assert status["state"] == "Failed" and status["job_status"] == "NotStarted"
    assert status["refused_instance_types"] == ["ml.g4dn.xlarge", "ml.m5.xlarge"]
    assert "'ml.g4dn.xlarge for transform job usage' is 0" in status["reason"]
    assert "'ml.m5.xlarge for transform job usage' is 0" in status["reason"]
    assert "Service Quotas" in status["reason"]


def test_when_every_type_is_remembered_refused_all_are_tried_again(env: Env) -> None:
    # Given both types remembered as refused, and the GPU quota raised since
    for instance_type in ("ml.g4dn.xlarge", "ml.m5.xlarge"):
        env.dynamodb.put_item(
            TableName="claims",
            Item={"pk": {"S": refusal_pk(instance_type)}, "expires_at": {"N": str(NOW + 600)}},
        )
    sagemaker, stubber = stubbed()
    stubber.add_response("create_transform_job", STARTED, GPU_PARAMS)
    # When a file arrives
    result, _ = run(env, sagemaker, stubber, ["input/g.jsonl"])
    # Then it runs on the preferred type and that type's refusal is forgotten
    assert result.failures == {} and len(result.jobs_started) == 1
    assert refusal_row(env, "ml.g4dn.xlarge") is None
    assert refusal_row(env, "ml.m5.xlarge") is not None


def test_zstc_jobs_says_which_instance_type_each_job_ran_on(env: Env) -> None:
    from zstc.jobs import list_jobs
    from zstc.stack import StackOutputs

    # Given a job that fell back to the CPU type (moto runs it at once)
    trigger = env.trigger(env.settings(BATCH_TARGETS=GPU_THEN_CPU), clock=lambda: float(NOW))
    env.dynamodb.put_item(
        TableName="claims", Item={"pk": {"S": refusal_pk("ml.g4dn.xlarge")}, "expires_at": {"N": str(NOW + 60)}}
    )
    env.put("input/h.jsonl")
    assert trigger.process([env.message("input/h.jsonl")]).failures == {}
    outputs = StackOutputs(
        stack_name="s",
        region=REGION,
        bucket=BUCKET,
        input_prefix="input/",
        output_prefix="output/",
        errors_prefix="errors/",
        model_name="zstc-model",
        queue_url=env.queue_url,
        dead_letter_queue_url=env.dlq_url,
        transform_job_prefix="zstc-test",
    )
    # When the jobs are listed
    (row,) = list_jobs(env.sagemaker, env.s3, outputs, limit=5, count_records=False)
    # Then the row and its JSON name the instance type
    assert row.instance_type == "ml.m5.xlarge" and row.to_json()["instance_type"] == "ml.m5.xlarge"
