"""``zstc jobs``: this stack's transform jobs with their inputs, records, duration and failure reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from zstc.stack import StackOutputs


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


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def job_inputs(s3: Any, description: dict[str, Any]) -> list[str]:
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    uri = source.get("S3Uri", "")
    if source.get("S3DataType") != "ManifestFile":
        return [uri] if uri else []
    bucket, key = _split(uri)
    try:
        entries = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, ValueError):
        return []
    if not entries or not isinstance(entries[0], dict):
        return []
    prefix = str(entries[0].get("prefix", ""))
    return [prefix + str(entry) for entry in entries[1:]]


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


def _status_records(s3: Any, bucket: str, key: str) -> int | None:
    try:
        record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, ValueError):
        return None
    value = record.get("records") if isinstance(record, dict) else None
    return value if isinstance(value, int) else None


def records_of(s3: Any, stack: StackOutputs, description: dict[str, Any], inputs: list[str]) -> int | None:
    """Records in the job's outputs (one output line per input line), or None while they are not all there."""
    if description.get("TransformJobStatus") != "Completed":
        return None
    output_path = description.get("TransformOutput", {}).get("S3OutputPath", "")
    out_bucket, out_prefix = _split(output_path)
    total = 0
    for uri in inputs:
        _, key = _split(uri)
        if not key.startswith(stack.input_prefix):
            return None
        relative = key[len(stack.input_prefix) :]
        output_key = (out_prefix.rstrip("/") + "/" if out_prefix else "") + relative + ".out"
        # the job-outcome function's status record counts them already; count the output only without it
        lines = _status_records(s3, out_bucket, output_key.removesuffix(".out") + ".status.json")
        if lines is None:
            lines = count_lines(s3, out_bucket, output_key)
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
