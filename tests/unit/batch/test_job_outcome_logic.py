"""Pure logic of the job-outcome function: where status records go and what they say."""

from __future__ import annotations

import json

import pytest

from functions.batch_trigger import logic as batch_trigger_logic
from functions.job_outcome.logic import (
    FileOutcome,
    JobEvent,
    count_records,
    failure_notice,
    manifest_uri,
    status_record,
)
from tests.declared_env import declared_outcome_environment, resource_names
from tests.events import load_event
from zstc_contract.jobs import is_stack_job
from zstc_contract.settings import Env, OutcomeSettings, SettingsError

# The function's environment as the stack declares it, for a bucket "zstc-batch-test" and the prefix "zstc-test".
ENV = declared_outcome_environment(resources=resource_names(bucket="zstc-batch-test", job_name_prefix="zstc-test"))
SETTINGS = OutcomeSettings.from_env(ENV)


def event(name: str) -> JobEvent:
    return JobEvent.from_event(load_event(name))


def test_both_functions_agree_on_the_job_name_shape() -> None:
    name = batch_trigger_logic.job_name("zstc-test", [batch_trigger_logic.S3Object("b", "input/a.jsonl", "v")])
    assert is_stack_job(name, "zstc-test")


def test_the_event_names_the_manifest() -> None:
    job = event("batch_transform_job_completed.json")
    assert job.status == "Completed"
    assert manifest_uri(SETTINGS, job) == f"s3://zstc-batch-test/manifests/{job.name}.json"


def test_a_succeeded_file_gets_its_status_next_to_its_output() -> None:
    job = event("batch_transform_job_completed.json")
    key, status = status_record(SETTINGS, job, FileOutcome("a/b.jsonl", True, True, records=3, record_errors=1))
    record = status.to_json()
    assert key == "output/a/b.jsonl.status.json"
    assert record["state"] == "Succeeded" and record["output"] == "s3://zstc-batch-test/output/a/b.jsonl.out"
    assert record["records"] == 3 and record["record_errors"] == 1 and record["job_name"] == job.name


def test_a_failed_file_gets_its_status_under_errors_with_sagemakers_reason() -> None:
    job = event("batch_transform_job_failed.json")
    key, status = status_record(SETTINGS, job, FileOutcome("a/b.jsonl", False, False))
    record = status.to_json()
    assert key == "errors/a/b.jsonl.status.json"
    assert record["state"] == "Failed" and "ClientError: See job logs" in record["reason"]


def test_a_completed_job_without_the_output_is_reported_not_hidden() -> None:
    job = event("batch_transform_job_completed.json")
    key, status = status_record(SETTINGS, job, FileOutcome("a.jsonl", False, False))
    record = status.to_json()
    assert key == "errors/a.jsonl.status.json" and "no output" in record["reason"]


def test_records_and_error_lines_are_counted() -> None:
    lines = [b'{"id": 1, "labels": ["a"], "scores": [1.0]}', b"", b'{"id": 2, "error": "no labels"}', b"junk"]
    assert count_records(lines) == (3, 2)


def test_the_failure_notice_fits_sns() -> None:
    job = event("batch_transform_job_failed.json")
    notice = failure_notice(SETTINGS, job, [FileOutcome("x.jsonl", False, False)], 4)
    assert len(notice["Subject"]) <= 100 and notice["Subject"].isascii()
    body = json.loads(notice["Message"])
    assert body["files_failed"] == 1 and body["failed_inputs"] == ["s3://zstc-batch-test/input/x.jsonl"]


def test_missing_topic_fails_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="TOPIC_ARN"):
        OutcomeSettings.from_env({k: v for k, v in ENV.items() if k != Env.TOPIC_ARN})


@pytest.mark.parametrize("fixture", ["batch_transform_job_completed.json", "batch_transform_job_failed.json"])
def test_the_status_record_says_which_instance_type_ran(fixture: str) -> None:
    job = event(fixture)
    expected = load_event(fixture)["detail"]["TransformResources"]["InstanceType"]
    _, status = status_record(SETTINGS, job, FileOutcome("a.jsonl", job.status == "Completed", True, records=1))
    record = status.to_json()
    assert record["instance_type"] == expected
