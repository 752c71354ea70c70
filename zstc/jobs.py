"""``zstc jobs``: this stack's transform jobs with their inputs, records, duration and failure reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from zstc.stack import StackOutputs
from zstc_contract.jobs import COMPLETED
from zstc_contract.layout import key_prefix, output_key, relative_key, status_key
from zstc_contract.manifest import decode_manifest
from zstc_contract.status import StatusRecord
from zstc_contract.uri import split_uri


@dataclass(kw_only=True)
class JobRow:
    name: str
    state: str
    inputs: list[str]  # s3:// URIs (manifest entries), or the S3 prefix
    records: int | None
    created: datetime | None
    started: datetime | None
    ended: datetime | None
    failure_reason: str | None
    instance_type: str | None = None  # the type the job ran on (the trigger may fall back to a later one)

    @property
    def inputs_text(self) -> str:
        return str(len(self.inputs)) if self.inputs else "?"

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "name": self.name,
            "state": self.state,
            "inputs": self.inputs,
            "records": self.records,
            "created": iso(self.created),
            "started": iso(self.started),
            "ended": iso(self.ended),
            "failure_reason": self.failure_reason,
            "instance_type": self.instance_type,
        }


def job_inputs(s3: Any, description: dict[str, Any]) -> list[str]:
    """The s3:// URIs of a job's inputs: its manifest's entries, or its S3 prefix ([] when unreadable)."""
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    uri = source.get("S3Uri", "")
    if source.get("S3DataType") != "ManifestFile":
        return [uri] if uri else []
    try:
        bucket, key = split_uri(uri)
        return decode_manifest(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).uris()
    except (ClientError, ValueError):
        return []


def read_status(s3: Any, bucket: str, key: str) -> StatusRecord | None:
    """The status record at ``key``, or None when there is none (or it cannot be read)."""
    try:
        return StatusRecord.decode(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, ValueError):
        return None


def count_lines(s3: Any, bucket: str, key: str) -> int | None:
    """Non-blank lines of an object, streamed (None if it does not exist)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError:
        return None
    count, pending = 0, b""
    for chunk in body.iter_chunks(1024 * 1024):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        count += sum(1 for line in lines if line.strip())
    return count + (1 if pending.strip() else 0)


def records_of(s3: Any, stack: StackOutputs, description: dict[str, Any], inputs: list[str]) -> int | None:
    """Records in the job's outputs (one output line per input line), or None while they are not all there."""
    if description.get("TransformJobStatus") != COMPLETED:
        return None
    try:
        out_bucket, out_path = split_uri(description.get("TransformOutput", {}).get("S3OutputPath", ""))
    except ValueError:
        return None
    out_prefix = key_prefix(out_path.rstrip("/"))
    total = 0
    for uri in inputs:
        try:
            relative = relative_key(split_uri(uri)[1], stack.input_prefix)
        except ValueError:
            return None
        # the job-outcome function's status record counts them already; count the output only without it
        status = read_status(s3, out_bucket, status_key(out_prefix, relative))
        lines = status.records if status is not None else None
        if lines is None:
            lines = count_lines(s3, out_bucket, output_key(out_prefix, relative))
        if lines is None:
            return None
        total += lines
    return total


def list_jobs(sagemaker: Any, s3: Any, stack: StackOutputs, *, limit: int, count_records: bool) -> list[JobRow]:
    rows: list[JobRow] = []
    paginator = sagemaker.get_paginator("list_transform_jobs")
    pages = paginator.paginate(
        NameContains=stack.transform_job_prefix,
        SortBy="CreationTime",
        SortOrder="Descending",
        PaginationConfig={"MaxItems": limit},
    )
    for page in pages:
        for summary in page.get("TransformJobSummaries", []):
            if not summary["TransformJobName"].startswith(stack.transform_job_prefix):
                continue
            description = sagemaker.describe_transform_job(TransformJobName=summary["TransformJobName"])
            inputs = job_inputs(s3, description)
            rows.append(
                JobRow(
                    name=summary["TransformJobName"],
                    state=description.get("TransformJobStatus", summary.get("TransformJobStatus", "?")),
                    inputs=inputs,
                    records=records_of(s3, stack, description, inputs) if count_records else None,
                    created=description.get("CreationTime"),
                    started=description.get("TransformStartTime"),
                    ended=description.get("TransformEndTime"),
                    failure_reason=description.get("FailureReason") or None,
                    instance_type=description.get("TransformResources", {}).get("InstanceType"),
                )
            )
            if len(rows) >= limit:
                break
    # newest first, whatever order the service returned
    return sorted(rows, key=lambda row: row.created.timestamp() if row.created else 0.0, reverse=True)[:limit]
