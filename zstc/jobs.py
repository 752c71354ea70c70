"""``zstc jobs``: this stack's transform jobs with their inputs, records, duration and failure reason.

Also what ``zstc submit`` / ``zstc wait`` share with it: a job's inputs (:func:`job_inputs`) and a file's status
record (:func:`file_status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from zstc.stack import StackOutputs
from zstc_contract.jobs import COMPLETED
from zstc_contract.layout import (
    MANIFEST_SUFFIX,
    MAX_KEY_BYTES,
    key_bytes,
    key_prefix,
    long_key_status_key,
    output_key,
    relative_key,
    staged_prefix,
    status_key,
)
from zstc_contract.manifest import decode_manifest
from zstc_contract.status import SUCCEEDED, StatusRecord
from zstc_contract.uri import s3_uri, split_uri


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


def job_inputs(s3: Any, description: dict[str, Any], *, input_prefix: str) -> list[str]:
    """The s3:// URIs of a job's inputs: its manifest's entries, or its S3 prefix ([] when unreadable).

    A job that reads re-staged copies (its manifest's prefix is its own folder ``<manifest prefix>_staged/<job>/``,
    :func:`zstc_contract.layout.staged_prefix`) lists its ORIGINAL inputs: ``s3://<bucket>/<input_prefix><entry>``,
    ``input_prefix`` being the stack's ``InputPrefix`` output (:attr:`zstc.stack.StackOutputs.input_prefix`).
    """
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    uri = source.get("S3Uri", "")
    if source.get("S3DataType") != "ManifestFile":
        return [uri] if uri else []
    try:
        bucket, key = split_uri(uri)
        manifest = decode_manifest(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        prefix_bucket, prefix_key = split_uri(manifest.prefix)
    except (ClientError, ValueError):
        return []
    if prefix_key == staged_folder(description):
        return [s3_uri(prefix_bucket, input_prefix + entry) for entry in manifest.entries]
    return manifest.uris()


def staged_folder(description: dict[str, Any]) -> str | None:
    """The key prefix a job reads its re-staged copies from, were it to read any: its manifest is
    ``<manifest prefix><job>.json`` (:func:`zstc_contract.layout.manifest_key`), its copies lie under
    ``<manifest prefix>_staged/<job>/``. None for a job without a manifest so named."""
    name = str(description.get("TransformJobName", ""))
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    try:
        key = split_uri(source.get("S3Uri", ""))[1]
    except ValueError:
        return None
    manifest_name = name + MANIFEST_SUFFIX
    if source.get("S3DataType") != "ManifestFile" or not name or not key.endswith(manifest_name):
        return None
    return staged_prefix(key.removesuffix(manifest_name), name)


def read_status(s3: Any, bucket: str, key: str) -> StatusRecord | None:
    """The status record at ``key``, or None when there is none (or it cannot be read)."""
    try:
        return StatusRecord.decode(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, ValueError):
        return None


@dataclass(frozen=True)
class FoundStatus:
    """A file's status record and where it lies (``record`` None: an object is there, but no readable record)."""

    key: str
    record: StatusRecord | None


def file_status(s3: Any, stack: StackOutputs, input_key: str, *, succeeded: bool) -> FoundStatus | None:
    """The status record of the input ``input_key`` in one of its places: next to its output (``succeeded``) or
    under the errors prefix (any other state); None while there is none.

    A record lies under the file's relative key (``<prefix><relative>.status.json``) unless that key would pass S3's
    limit; the trigger's refusal of a key too long for its derived keys, and any record whose own key would be too
    long, lie under ``<errors prefix>_long-keys/<sha256 of the input key>.status.json``
    (:func:`zstc_contract.layout.long_key_status_key`). That name is read where the relative one is absent or too
    long, and its record taken only when its ``input`` is this file's URI and its state is of the kind asked.
    """
    key = status_key(stack.output_prefix if succeeded else stack.errors_prefix, stack.relative(input_key))
    if key_bytes(key) <= MAX_KEY_BYTES:
        try:
            body = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        else:
            try:
                return FoundStatus(key, StatusRecord.decode(body))
            except ValueError:
                return FoundStatus(key, None)
    long_key = long_key_status_key(stack.errors_prefix, input_key)
    record = read_status(s3, stack.bucket, long_key)
    if record is None or record.input != s3_uri(stack.bucket, input_key) or (record.state == SUCCEEDED) != succeeded:
        return None
    return FoundStatus(long_key, record)


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
            key = split_uri(uri)[1]
            relative = relative_key(key, stack.input_prefix)
        except ValueError:
            return None
        # the job-outcome function's status record counts them already (when it answers for this job); count the
        # output in the job's folder only without it
        found = file_status(s3, stack, key, succeeded=True)
        status = found.record if found is not None else None
        lines = (
            status.records if status is not None and status.job_name == description.get("TransformJobName") else None
        )
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
            inputs = job_inputs(s3, description, input_prefix=stack.input_prefix)
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
