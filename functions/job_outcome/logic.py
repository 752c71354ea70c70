"""Pure logic of the job-outcome function: which status record goes where, and what the failure notice says.

No AWS calls here; :mod:`job_outcome.service` reads the manifest and the outputs and writes what this module
decides. Settings, key names and the status record are the contract's (``zstc_contract``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zstc_contract.jobs import COMPLETED, STOPPED
from zstc_contract.layout import input_key, manifest_key, output_key
from zstc_contract.settings import OutcomeSettings
from zstc_contract.status import StatusRecord
from zstc_contract.uri import s3_uri


@dataclass(frozen=True)
class JobEvent:
    """The fields of a "SageMaker Transform Job State Change" event this function uses."""

    name: str
    status: str
    failure_reason: str | None
    manifest_uri: str | None
    output_path: str | None
    time: str | None
    instance_type: str | None = None  # the type the job ran on (the trigger may have fallen back to a later one)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> JobEvent:
        detail = event.get("detail") or {}
        source = ((detail.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
        return cls(
            name=str(detail.get("TransformJobName", "")),
            status=str(detail.get("TransformJobStatus", "")),
            failure_reason=detail.get("FailureReason"),
            manifest_uri=source.get("S3Uri") if source.get("S3DataType") == "ManifestFile" else None,
            output_path=(detail.get("TransformOutput") or {}).get("S3OutputPath"),
            time=event.get("time"),
            instance_type=(detail.get("TransformResources") or {}).get("InstanceType"),
        )


def manifest_uri(settings: OutcomeSettings, job: JobEvent) -> str:
    return job.manifest_uri or s3_uri(settings.bucket, manifest_key(settings.manifest_prefix, job.name))


@dataclass(frozen=True)
class FileOutcome:
    relative: str
    succeeded: bool
    output_found: bool
    records: int | None = None
    record_errors: int | None = None


def status_record(settings: OutcomeSettings, job: JobEvent, outcome: FileOutcome) -> tuple[str, StatusRecord]:
    """(key, record) of one input file's status record: under ``output/`` on success, ``errors/`` otherwise."""
    input_uri = s3_uri(settings.bucket, input_key(settings.input_prefix, outcome.relative))
    out_uri = s3_uri(settings.bucket, output_key(settings.output_prefix, outcome.relative))
    record: StatusRecord
    if outcome.succeeded:
        record = StatusRecord.succeeded(
            input=input_uri,
            output=out_uri,
            job_name=job.name,
            job_status=job.status,
            finished_at=job.time,
            instance_type=job.instance_type,
            records=outcome.records,
            record_errors=outcome.record_errors,
        )
    else:
        record = StatusRecord.job_failed(
            input=input_uri,
            job_name=job.name,
            job_status=job.status,
            finished_at=job.time,
            instance_type=job.instance_type,
            reason=failure_reason(settings, job, out_uri),
        )
    prefixes = {"output_prefix": settings.output_prefix, "errors_prefix": settings.errors_prefix}
    return record.key(**prefixes, relative=outcome.relative), record


def failure_reason(settings: OutcomeSettings, job: JobEvent, out_uri: str) -> str:
    """What a failed file's status record says went wrong, and what to do."""
    if job.status == COMPLETED:  # the job says done but the output is not where it should be
        return (
            f"SageMaker reported the job Completed but wrote no output at {out_uri}. Look for the output under "
            f"{s3_uri(settings.bucket, settings.output_prefix)} and report the path to the maintainers."
        )
    if job.status == STOPPED:
        return "The transform job was stopped before this file finished. Upload the file again to retry it."
    return (
        f"{job.failure_reason or 'SageMaker gave no reason.'} The job's CloudWatch logs "
        f"(/aws/sagemaker/TransformJobs, stream prefix {job.name}) name the failing record; fix it and upload "
        "the file again."
    )


def count_records(lines: Iterable[bytes]) -> tuple[int, int]:
    """(output lines, error lines) of a ``.out`` object: error lines are objects with an ``error`` key."""
    records = errors = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        records += 1
        try:
            value = json.loads(line)
        except ValueError:
            errors += 1
            continue
        if isinstance(value, dict) and "error" in value:
            errors += 1
    return records, errors


def failure_notice(settings: OutcomeSettings, job: JobEvent, failed: list[FileOutcome], total: int) -> dict[str, str]:
    """SNS subject (≤ 100 ASCII characters) and message for a job with failed files."""
    subject = f"Transform job {job.status.lower()}: {job.name}"[:100]
    body = {
        "job_name": job.name,
        "job_status": job.status,
        "failure_reason": job.failure_reason,
        "files_total": total,
        "files_failed": len(failed),
        "failed_inputs": [s3_uri(settings.bucket, input_key(settings.input_prefix, f.relative)) for f in failed[:50]],
        "status_records": s3_uri(settings.bucket, settings.errors_prefix),
    }
    return {"Subject": subject, "Message": json.dumps(body, ensure_ascii=False, indent=2)}
