"""The local stand-in for SageMaker batch transform, against moto S3 (in-process)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from tests.events import load_event
from zstc_local.runner import MIB, InvocationError, LocalTransformRunner, state_change_event


def description(**overrides):
    base = {
        "TransformJobName": "job-1",
        "TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/job-1",
        "ModelName": "m",
        "MaxPayloadInMB": 1,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://bkt/manifests/job-1.json"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": "s3://bkt/output/",
            "Accept": "application/jsonlines",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    }
    base.update(overrides)
    return base


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="input/a/one.jsonl", Body=b'{"id": 1}\n{"id": 2}\n\n{"id": 3}\n')
        client.put_object(Bucket="bkt", Key="input/two.jsonl", Body=b'{"id": 4}\n')
        client.put_object(
            Bucket="bkt",
            Key="manifests/job-1.json",
            Body=json.dumps([{"prefix": "s3://bkt/input/"}, "a/one.jsonl", "two.jsonl"]),
        )
        yield client


def echo(calls):
    def invoke(body, content_type, accept, timeout):
        calls.append(body)
        return b"\n".join(b'{"echo": ' + line + b"}" for line in body.split(b"\n"))

    return invoke


def test_each_manifest_object_becomes_its_out_file_line_for_line(s3):
    calls = []
    outcome = LocalTransformRunner(s3=s3, invoke=echo(calls)).run(description())
    assert outcome.status == "Completed" and outcome.records == 4
    body = s3.get_object(Bucket="bkt", Key="output/a/one.jsonl.out")["Body"].read()
    assert body == b'{"echo": {"id": 1}}\n{"echo": {"id": 2}}\n{"echo": {"id": 3}}\n'
    assert s3.get_object(Bucket="bkt", Key="output/two.jsonl.out")["Body"].read() == b'{"echo": {"id": 4}}\n'
    assert len(calls) == 2  # MultiRecord: one request per object here


def test_single_record_strategy_sends_one_line_per_request(s3):
    calls = []
    LocalTransformRunner(s3=s3, invoke=echo(calls)).run(description(BatchStrategy="SingleRecord"))
    assert calls == [b'{"id": 1}', b'{"id": 2}', b'{"id": 3}', b'{"id": 4}']


def test_mini_batches_never_exceed_the_payload_limit():
    records = [b"x" * 400_000] * 5
    batches = list(LocalTransformRunner.mini_batches(records, strategy="MultiRecord", max_payload=MIB))
    assert [len(b) for b in batches] == [2, 2, 1]


def test_a_record_over_the_payload_limit_fails_the_object():
    with pytest.raises(ValueError, match="larger than MaxPayloadInMB"):
        list(LocalTransformRunner.mini_batches([b"x" * (MIB + 1)], strategy="MultiRecord", max_payload=MIB))


def test_a_failing_model_fails_the_job_and_writes_no_output_for_that_object(s3):
    def invoke(body, content_type, accept, timeout):
        if b'"id": 4' in body:
            raise InvocationError("model server answered HTTP 500")
        return body

    outcome = LocalTransformRunner(s3=s3, invoke=invoke).run(
        description(ModelClientConfig={"InvocationsMaxRetries": 0})
    )
    assert outcome.status == "Failed" and "1 of 2 input(s) failed" in outcome.failure_reason
    assert "Contents" not in s3.list_objects_v2(Bucket="bkt", Prefix="output/two.jsonl.out")
    assert s3.head_object(Bucket="bkt", Key="output/a/one.jsonl.out")


def test_the_state_change_event_has_the_shape_of_the_recorded_fixture(s3):
    outcome = LocalTransformRunner(s3=s3, invoke=echo([])).run(description())
    event = state_change_event(description(), outcome, region="us-east-1")
    fixture = load_event("batch_transform_job_completed")
    assert set(event) == set(fixture)
    assert event["detail-type"] == fixture["detail-type"] and event["detail"]["TransformJobStatus"] == "Completed"
    assert {"TransformJobName", "TransformInput", "TransformOutput", "TransformEndTime"} <= set(event["detail"])
    assert isinstance(event["detail"]["TransformEndTime"], int)


# --- the invocation timeout at the real hardware's speed ------------------------------------------------------------


def _tweets_job(s3, strategy: str) -> dict:
    import csv
    from pathlib import Path

    shared = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"
    labels = [
        "Health & Fitness", "Personal Growth", "Finance", "Career", "Education/Training", "Humor",
        "Family/Friends/Relationships", "Recreation & Leisure", "Time Management/Organization", "Philanthropic",
    ]  # fmt: skip
    with shared.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = list(csv.DictReader(handle))
    body = "".join(
        json.dumps({"id": str(i), "inputs": r["text"], "parameters": {"candidate_labels": labels}}) + "\n"
        for i, r in enumerate(rows)
    )
    s3.put_object(Bucket="bkt", Key="input/tweets.jsonl", Body=body.encode("utf-8"))
    s3.put_object(
        Bucket="bkt", Key="manifests/job-1.json", Body=json.dumps([{"prefix": "s3://bkt/input/"}, "tweets.jsonl"])
    )
    return description(
        BatchStrategy=strategy,
        ModelClientConfig={"InvocationsTimeoutInSeconds": 3600, "InvocationsMaxRetries": 1},
    )


def test_the_old_1_mb_cpu_mini_batch_times_out_and_the_new_sizing_finishes(s3):
    from functions.batch_trigger.logic import job_batching
    from functions.batch_trigger.sampling import samples_of
    from tests.declared_env import declared_trigger_environment, resource_names
    from zstc_contract.settings import Target, TriggerSettings

    # bart-large on ml.m5.xlarge, as synthesis decides it from the throughput table
    cpu = Target("ml.m5.xlarge", "m", None, pairs_per_second=4.144, tokens_per_pair=36.1)
    old = _tweets_job(s3, "MultiRecord")
    calls: list[bytes] = []
    failed = LocalTransformRunner(s3=s3, invoke=echo(calls), targets=[cpu]).run(old)
    # Then the 1 MB mini-batch (~3,000 tweets × 10 labels ≈ 7,700 s) outlives the 3,600 s timeout: the file fails
    assert failed.status == "Failed"
    assert "InvocationsTimeoutInSeconds" in failed.objects[0].error
    assert calls == []  # the emulation does not wait out an hour; it knows the answer
    # When the trigger sizes the job (the same code as in AWS) from the file's first lines
    head = s3.get_object(Bucket="bkt", Key="input/tweets.jsonl", Range="bytes=0-262143")["Body"].read()
    settings = TriggerSettings.from_env(declared_trigger_environment([cpu], resources=resource_names(bucket="bkt")))
    batching = job_batching(settings, cpu, samples_of([(head, False)], tokens_per_pair=cpu.tokens_per_pair))
    sized = dict(old, BatchStrategy=batching.strategy, MaxPayloadInMB=batching.max_payload_mb)
    passed = LocalTransformRunner(s3=s3, invoke=echo(calls), targets=[cpu]).run(sized)
    # Then each tweet is one invocation of a few seconds, and the file completes
    assert batching.strategy == "SingleRecord"
    assert passed.status == "Completed"
    assert passed.objects[0].records == len(calls) > 3000


def test_without_a_decided_rate_the_runner_does_not_guess(s3):
    job = _tweets_job(s3, "MultiRecord")
    assert LocalTransformRunner(s3=s3, invoke=echo([])).run(job).status == "Completed"
