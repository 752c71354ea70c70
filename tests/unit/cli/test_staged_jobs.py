"""A job that reads re-staged copies (its manifest's prefix is ``manifests/_staged/<job>/``) is shown, found and
matched by its ORIGINAL inputs: ``zstc jobs`` lists them, ``zstc submit`` / ``wait`` find the job, ``zstc doctor``
matches the output SageMaker named after the copy."""

from __future__ import annotations

import json

import pytest

from zstc import doctor
from zstc.jobs import job_inputs, list_jobs
from zstc_contract.layout import OUTPUT_NAMINGS, output_names, staged_prefix

BUCKET = "zstc-versions"  # the conftest's bucket
JOB = "s-batch-0123456789abcdef01234567"
STAGED = staged_prefix("manifests/", JOB)


def start_job(s3, sagemaker, prefix: str, entries: list[str], job: str = JOB) -> dict:
    """A transform job over the manifest ``manifests/<job>.json`` of ``entries`` under ``prefix``, as the trigger
    starts it; returns its description."""
    body = json.dumps([{"prefix": f"s3://{BUCKET}/{prefix}"}, *entries])
    s3.put_object(Bucket=BUCKET, Key=f"manifests/{job}.json", Body=body)
    sagemaker.create_transform_job(
        TransformJobName=job,
        ModelName="m",
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/manifests/{job}.json"}
            }
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/output/_jobs/{job}/"},
        TransformResources={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
    )
    return sagemaker.describe_transform_job(TransformJobName=job)


def test_a_staged_job_lists_its_original_inputs(aws):
    s3, sagemaker = aws
    description = start_job(s3, sagemaker, STAGED, ["a/b.jsonl", "c.jsonl"])
    assert job_inputs(s3, description, input_prefix="input/") == [
        f"s3://{BUCKET}/input/a/b.jsonl",
        f"s3://{BUCKET}/input/c.jsonl",
    ]
    # under the stack's own input prefix, whatever it is
    assert job_inputs(s3, description, input_prefix="data/in/")[0] == f"s3://{BUCKET}/data/in/a/b.jsonl"


@pytest.mark.parametrize(
    "prefix", ["input/", staged_prefix("manifests/", "s-batch-other")], ids=["inputs", "another job's folder"]
)
def test_other_manifests_list_their_entries_as_they_are(aws, prefix):
    s3, sagemaker = aws
    description = start_job(s3, sagemaker, prefix, ["a/b.jsonl"])
    assert job_inputs(s3, description, input_prefix="input/") == [f"s3://{BUCKET}/{prefix}a/b.jsonl"]


def test_jobs_shows_a_staged_jobs_original_inputs(aws, stack_outputs):
    s3, sagemaker = aws
    start_job(s3, sagemaker, STAGED, ["a/b.jsonl"])
    (row,) = list_jobs(sagemaker, s3, stack_outputs, limit=5, count_records=False)
    assert row.name == JOB and row.inputs == [f"s3://{BUCKET}/input/a/b.jsonl"]


def test_submit_finds_the_staged_job_that_reads_its_file(aws, watcher):
    s3, sagemaker = aws
    start_job(s3, sagemaker, STAGED, ["a/b.jsonl"])
    assert watcher("v1", "input/a/b.jsonl").find_job() == JOB
    assert watcher("v1", "input/other.jsonl").find_job() is None


@pytest.mark.parametrize("form", OUTPUT_NAMINGS)
def test_doctor_matches_the_output_sagemaker_named_after_the_staged_copy(aws, stack_outputs, form):
    s3, sagemaker = aws
    start_job(s3, sagemaker, STAGED, ["zstc/smoke.jsonl"])
    # Given the output SageMaker wrote for the copy it read, under the naming ``form``
    name = output_names("zstc/smoke.jsonl", STAGED)[form]
    s3.put_object(Bucket=BUCKET, Key=f"output/_jobs/{JOB}/{name}.out", Body=b"{}\n")
    # Then the doctor names that form and that object for the original input
    check, found = doctor.naming_check(s3, sagemaker, stack_outputs, "input/zstc/smoke.jsonl", JOB)
    assert check.state == doctor.OK and check.detail.startswith(form), check.detail
    assert found == (BUCKET, f"output/_jobs/{JOB}/{name}.out")


def test_doctor_reads_a_plain_jobs_inputs_as_before(aws, stack_outputs):
    s3, sagemaker = aws
    start_job(s3, sagemaker, "input/", ["zstc/smoke.jsonl"])
    s3.put_object(Bucket=BUCKET, Key=f"output/_jobs/{JOB}/input/zstc/smoke.jsonl.out", Body=b"{}\n")
    check, _ = doctor.naming_check(s3, sagemaker, stack_outputs, "input/zstc/smoke.jsonl", JOB)
    assert check.state == doctor.OK and check.detail.startswith("full key"), check.detail
