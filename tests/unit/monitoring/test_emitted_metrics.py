"""The metrics the batch functions emit (Powertools EMF on stdout) are those the dashboard and alarms read: namespace
``ZeroShotClassification``, the single dimension ``service``, the names and values of docs/batch.md."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.config import Config

from functions.batch_trigger.handler import TriggerFunction
from functions.batch_trigger.handler import build_handler as build_trigger
from functions.job_outcome.handler import OutcomeFunction
from functions.job_outcome.handler import build_handler as build_outcome
from tests.integration.batch.batch_moto import BUCKET, PREFIX, REGION, Env

NAMESPACE = "ZeroShotClassification"
CONTEXT = SimpleNamespace(
    function_name="fn", memory_limit_in_mb=512, invoked_function_arn="arn:aws:lambda:us-east-1:1:function:fn",
    aws_request_id="req-1",
)  # fmt: skip


@pytest.fixture
def env(mocked_aws: None) -> Iterator[Env]:
    yield Env()


def emitted(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents Powertools printed."""
    documents = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def totals(documents: list[dict[str, Any]], service: str) -> dict[str, float]:
    """Metric name → summed value, checking every document's namespace and dimensions on the way."""
    result: dict[str, float] = {}
    for doc in documents:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert directive["Dimensions"] == [["service"]]  # exactly what the dashboard's metrics name
        assert doc["service"] == service
        for metric in directive["Metrics"]:
            assert metric["Unit"] == "Count"
            value = doc[metric["Name"]]
            result[metric["Name"]] = result.get(metric["Name"], 0) + (sum(value) if isinstance(value, list) else value)
    return result


# --- trigger ----------------------------------------------------------------------------------------------------------


def _clients(service: str, config: Config) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, config=config)


@pytest.fixture
def trigger(env: Env) -> TriggerFunction:
    """The trigger's handler as Lambda builds it, from the environment the stack declares."""
    function = build_trigger(env.environment(MAX_CONCURRENT_JOBS=10), _clients)
    # Powertools shares one metric/dimension set per process: drop what other tests' instances left unflushed.
    function.metrics.clear_metrics()
    return function


def sqs_event(env: Env, keys: list[str]) -> dict[str, Any]:
    records = []
    for key in keys:
        env.put(key)
        message = env.message(key)
        records.append(
            {
                "messageId": message.message_id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "x",
                "eventSource": "aws:sqs",
                "eventSourceARN": env.queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def test_the_trigger_counts_files_received_and_jobs_started(env, trigger, capsys):
    # Given two new files in one batch
    event = sqs_event(env, ["input/a.jsonl", "input/b.jsonl"])
    capsys.readouterr()
    # When the trigger handles it
    trigger(event, CONTEXT)
    # Then it reports two files received and one job started, under service=batch-trigger
    counts = totals(emitted(capsys.readouterr().out), "batch-trigger")
    assert counts["FilesReceived"] == 2
    assert counts["JobsStarted"] == 1
    assert counts.get("FilesDuplicate", 0) == 0


def test_the_trigger_logs_the_instance_type_each_job_started_on(env, trigger):
    # Given the function's own JSON formatter on a capturing handler
    capture = _Capture(trigger.logger.registered_formatter)
    trigger.logger.addHandler(capture)
    try:
        # When a file starts a job
        trigger(sqs_event(env, ["input/t.jsonl"]), CONTEXT)
    finally:
        trigger.logger.removeHandler(capture)
    # Then the "Transform job started" line carries the fields of the dashboard's instance-type widget
    (started,) = [line for line in capture.lines if line["message"] == "Transform job started"]
    assert started["instance_type"] == "ml.m5.xlarge" and started["model_name"] == "zstc-model"
    assert started["refused_instance_types"] == []


def test_the_trigger_counts_duplicates_and_starts_no_job_for_them(env, trigger, capsys):
    # Given a.jsonl and b.jsonl already handled in one job
    trigger(sqs_event(env, ["input/a.jsonl", "input/b.jsonl"]), CONTEXT)
    capsys.readouterr()
    # When S3 delivers a.jsonl's event again (at-least-once) in a batch with a new file c.jsonl
    trigger(sqs_event(env, ["input/a.jsonl", "input/c.jsonl"]), CONTEXT)
    # Then a.jsonl is counted as a duplicate, both as received, and one job starts (for c.jsonl alone)
    counts = totals(emitted(capsys.readouterr().out), "batch-trigger")
    assert counts["FilesDuplicate"] == 1
    assert counts["FilesReceived"] == 2
    assert counts["JobsStarted"] == 1


def test_the_trigger_counts_deferred_jobs_and_files(env, trigger, capsys, monkeypatch):
    # Given SageMaker refuses the job for quota
    from botocore.exceptions import ClientError

    event = sqs_event(env, ["input/quota.jsonl"])

    def refuse(**_kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "quota 0"}}, "CreateTransformJob")

    monkeypatch.setattr(trigger.client("sagemaker"), "create_transform_job", refuse)
    capsys.readouterr()
    # When the trigger handles the file
    trigger(event, CONTEXT)
    # Then one job and one file are counted as deferred, none started
    counts = totals(emitted(capsys.readouterr().out), "batch-trigger")
    assert (counts["JobsDeferred"], counts["FilesDeferred"]) == (1, 1)
    assert counts.get("JobsStarted", 0) == 0


def test_the_trigger_counts_instance_type_refusals_and_moved_jobs(env, trigger, capsys, monkeypatch):
    # Given two configured types, and SageMaker refusing the first for its quota (0) but taking the second
    from botocore.exceptions import ClientError

    from functions.batch_trigger.logic import parse_targets
    from tests.integration.batch.batch_moto import GPU_THEN_CPU

    monkeypatch.setattr(trigger, "settings", dataclasses.replace(trigger.settings, targets=parse_targets(GPU_THEN_CPU)))
    inner = trigger.client("sagemaker").create_transform_job
    calls: list[str] = []

    def create(**request: Any) -> Any:
        calls.append(request["TransformResources"]["InstanceType"])
        if request["TransformResources"]["InstanceType"] == "ml.g4dn.xlarge":
            message = (
                "The account-level service limit 'ml.g4dn.xlarge for transform job usage' is 0 Instances, with current "
                "utilization of 0 Instances and a request delta of 1 Instances. Please contact AWS support to request "
                "an increase for this limit."
            )
            raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": message}}, "CreateTransformJob")
        return inner(**request)

    monkeypatch.setattr(trigger.client("sagemaker"), "create_transform_job", create)
    event = sqs_event(env, ["input/gpu.jsonl"])
    capsys.readouterr()
    # When the trigger handles the file
    trigger(event, CONTEXT)
    # Then the refusal and the moved job are counted, and the job started on the CPU type
    counts = totals(emitted(capsys.readouterr().out), "batch-trigger")
    assert (counts["InstanceTypeRefusals"], counts["JobsMovedToAnotherInstanceType"], counts["JobsStarted"]) == (
        1,
        1,
        1,
    )
    assert calls == ["ml.g4dn.xlarge", "ml.m5.xlarge"]


# --- outcome ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def outcome(env: Env) -> OutcomeFunction:
    function = build_outcome(env.outcome_environment(), _clients)
    function.metrics.clear_metrics()  # shared per process, see the trigger fixture
    return function


def job_event(env: Env, status: str, outputs: dict[str, bytes]) -> dict[str, Any]:
    """A job over input/ok.jsonl and input/bad.jsonl whose outputs are ``outputs`` (relative name → body)."""
    from functions.batch_trigger.logic import S3Object, job_name

    name = job_name(PREFIX, [S3Object(BUCKET, "input/ok.jsonl", "e"), S3Object(BUCKET, "input/bad.jsonl", "e")])
    manifest = [{"prefix": f"s3://{BUCKET}/input/"}, "ok.jsonl", "bad.jsonl"]
    env.s3.put_object(Bucket=BUCKET, Key=f"manifests/{name}.json", Body=json.dumps(manifest).encode())
    for relative, body in outputs.items():
        env.s3.put_object(Bucket=BUCKET, Key=f"output/{relative}.out", Body=body)
    return {
        "detail-type": "SageMaker Transform Job State Change",
        "source": "aws.sagemaker",
        "detail": {
            "TransformJobName": name,
            "TransformJobStatus": status,
            "FailureReason": "ClientError: bad record" if status == "Failed" else None,
            "TransformInput": {
                "DataSource": {
                    "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/manifests/{name}.json"}
                }
            },
            "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/output/"},
            "TransformResources": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1},
        },
    }


OK_OUTPUT = b'{"id": 1, "sequence": "s", "labels": ["x"], "scores": [1.0]}\n{"id": 2, "error": "no labels"}\n'


def test_a_failed_job_counts_the_job_files_and_records(env, outcome, capsys):
    # Given a failed job that wrote the output of one of its two files (two records, one an error record)
    event = job_event(env, "Failed", {"ok.jsonl": OK_OUTPUT})
    capsys.readouterr()
    # When the outcome function handles the event
    outcome(event, CONTEXT)
    # Then the job, files and records are counted under service=job-outcome
    counts = totals(emitted(capsys.readouterr().out), "job-outcome")
    assert counts["JobsFailed"] == 1 and counts.get("JobsCompleted", 0) == 0
    assert (counts["FilesSucceeded"], counts["FilesFailed"]) == (1, 1)
    assert (counts["RecordsProcessed"], counts["RecordErrors"]) == (2, 1)
    assert counts.get("OutputsMissing", 0) == 0  # a failed job's missing output is expected


def test_a_completed_job_with_a_missing_output_counts_it(env, outcome, capsys):
    event = job_event(env, "Completed", {"ok.jsonl": OK_OUTPUT})
    capsys.readouterr()
    outcome(event, CONTEXT)
    counts = totals(emitted(capsys.readouterr().out), "job-outcome")
    assert counts["JobsCompleted"] == 1 and counts.get("JobsFailed", 0) == 0
    assert counts["OutputsMissing"] == 1


class _Capture(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_outcome_logs_name_the_job_and_each_file_and_carry_the_counts_the_dashboard_queries(env, outcome):
    # Given the function's own JSON formatter on a capturing handler
    capture = _Capture(outcome.logger.registered_formatter)
    outcome.logger.addHandler(capture)
    try:
        event = job_event(env, "Failed", {"ok.jsonl": OK_OUTPUT})
        # When a job's outcome is recorded
        outcome(event, CONTEXT)
    finally:
        outcome.logger.removeHandler(capture)
    name = event["detail"]["TransformJobName"]
    # Then every line about a file names the file and the job
    files = [line for line in capture.lines if line["message"] in ("File succeeded", "File failed")]
    assert {line["object_key"] for line in files} == {"input/ok.jsonl", "input/bad.jsonl"}
    assert all(line["job_name"] == name for line in files)
    # And the summary line has the fields of the dashboard's "Recent transform jobs" table
    (summary,) = [line for line in capture.lines if line["message"] == "Job outcome recorded"]
    fields = ("job_name", "job_status", "instance_type", "files", "files_failed", "records", "record_errors")
    assert {k: summary[k] for k in fields} == {
        "job_name": name,
        "instance_type": "ml.g4dn.xlarge",
        "job_status": "Failed",
        "files": 2,
        "files_failed": 1,
        "records": 2,
        "record_errors": 1,
    }
