"""zstc submit/wait takes only the answer for the uploaded version: an earlier upload's output or record is not it."""

from __future__ import annotations

import pytest

from zstc.errors import JobFailedError
from zstc_contract.status import OutcomeDetail, StatusRecord, put_status_record

BUCKET = "zstc-versions"  # the conftest's bucket


def succeeded(version_id: str) -> StatusRecord:
    return StatusRecord.succeeded(
        input=f"s3://{BUCKET}/input/a.jsonl", output=f"s3://{BUCKET}/output/a.jsonl.out", job_name="s-batch-1",
        job_status="Completed", finished_at=None, instance_type="ml.m5.xlarge", records=1, record_errors=0,
        detail=OutcomeDetail(version_id=version_id),
    )  # fmt: skip


def test_an_earlier_versions_output_is_not_this_uploads_answer(aws, watcher):
    s3, _ = aws
    # Given an earlier upload's published output and success record
    s3.put_object(Bucket=BUCKET, Key="output/a.jsonl.out", Body=b'{"labels": ["x"]}\n')
    put_status_record(s3, BUCKET, "output/a.jsonl.status.json", succeeded("v-old"))
    # When the new upload (another version) is polled before its job has finished
    progress, output = watcher("v-new").poll()
    # Then it keeps waiting
    assert output is None and progress.stage == "queued"
    # And once the outcome function has answered for this version, the output is ready
    put_status_record(s3, BUCKET, "output/a.jsonl.status.json", succeeded("v-new"))
    assert watcher("v-new").poll()[1] == "output/a.jsonl.out"


def test_an_earlier_versions_failure_does_not_fail_this_upload(aws, watcher):
    s3, _ = aws
    failed = StatusRecord.job_failed(
        input=f"s3://{BUCKET}/input/a.jsonl", job_name="s-batch-0", job_status="Failed", finished_at=None,
        instance_type=None, reason="old failure", detail=OutcomeDetail(version_id="v-old"),
    )  # fmt: skip
    put_status_record(s3, BUCKET, "errors/a.jsonl.status.json", failed)
    assert watcher("v-new").poll()[1] is None
    with pytest.raises(JobFailedError, match="old failure"):
        watcher("v-old").poll()


def test_records_without_a_version_are_taken_as_answers(aws, watcher):
    s3, _ = aws  # unversioned buckets and records of older stacks name no version
    s3.put_object(Bucket=BUCKET, Key="output/a.jsonl.out", Body=b"{}\n")
    assert watcher(None).poll()[1] == "output/a.jsonl.out"
