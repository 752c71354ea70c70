"""Pure logic of the job-outcome function: which status record goes where, and what the failure notice says.

No AWS calls here; :mod:`job_outcome` reads the manifest and the outputs and writes what this module decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from zstc_contract import (  # the batch layer, shared with the trigger
    SettingsError,
    prefix_env,
    required_env,
    status_key,
)

TERMINAL: Final = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True, kw_only=True)
class OutcomeSettings:
    bucket: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    errors_prefix: str = "errors/"
    manifest_prefix: str = "manifests/"
    job_name_prefix: str
    topic_arn: str
    count_records_max_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OutcomeSettings:
        raw_limit = env.get("COUNT_RECORDS_MAX_BYTES", str(100 * 1024 * 1024))
        if not raw_limit.isdigit():
            raise SettingsError(f"COUNT_RECORDS_MAX_BYTES={raw_limit!r}: expected a number of bytes (0 = never count)")
        return cls(
            bucket=required_env(env, "BUCKET_NAME"),
            input_prefix=prefix_env(env, "INPUT_PREFIX", "input/"),
            output_prefix=prefix_env(env, "OUTPUT_PREFIX", "output/"),
            errors_prefix=prefix_env(env, "ERRORS_PREFIX", "errors/"),
            manifest_prefix=prefix_env(env, "MANIFEST_PREFIX", "manifests/"),
            job_name_prefix=required_env(env, "JOB_NAME_PREFIX"),
            topic_arn=required_env(env, "TOPIC_ARN"),
            count_records_max_bytes=int(raw_limit),
        )


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


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def manifest_uri(settings: OutcomeSettings, job: JobEvent) -> str:
    return job.manifest_uri or f"s3://{settings.bucket}/{settings.manifest_prefix}{job.name}.json"


def output_key(settings: OutcomeSettings, relative: str) -> str:
    """Where SageMaker writes a manifest entry's result: ``<S3OutputPath><entry>.out``."""
    return f"{settings.output_prefix}{relative}.out"


@dataclass(frozen=True)
class FileOutcome:
    relative: str
    succeeded: bool
    output_found: bool
    records: int | None = None
    record_errors: int | None = None


def status_record(settings: OutcomeSettings, job: JobEvent, outcome: FileOutcome) -> tuple[str, dict[str, Any]]:
    """(key, body) of one input file's status record: under ``output/`` on success, ``errors/`` otherwise."""
    base = {
        "input": f"s3://{settings.bucket}/{settings.input_prefix}{outcome.relative}",
        "job_name": job.name,
        "job_status": job.status,
        "finished_at": job.time,
        "instance_type": job.instance_type,
    }
    out_uri = f"s3://{settings.bucket}/{output_key(settings, outcome.relative)}"
    if outcome.succeeded:
        record = {
            **base,
            "state": "Succeeded",
            "output": out_uri,
            "records": outcome.records,
            "record_errors": outcome.record_errors,
        }
        return status_key(settings.output_prefix, outcome.relative), record
    if job.status == "Completed":  # the job says done but the output is not where it should be
        reason = (
            f"SageMaker reported the job Completed but wrote no output at {out_uri}. Look for the output under "
            f"s3://{settings.bucket}/{settings.output_prefix} and report the path to the maintainers."
        )
    elif job.status == "Stopped":
        reason = "The transform job was stopped before this file finished. Upload the file again to retry it."
    else:
        reason = (
            f"{job.failure_reason or 'SageMaker gave no reason.'} The job's CloudWatch logs "
            f"(/aws/sagemaker/TransformJobs, stream prefix {job.name}) name the failing record; fix it and upload "
            "the file again."
        )
    record = {**base, "state": "Failed", "output": None, "reason": reason}
    return status_key(settings.errors_prefix, outcome.relative), record


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
        "failed_inputs": [f"s3://{settings.bucket}/{settings.input_prefix}{f.relative}" for f in failed[:50]],
        "status_records": f"s3://{settings.bucket}/{settings.errors_prefix}",
    }
    return {"Subject": subject, "Message": json.dumps(body, ensure_ascii=False, indent=2)}
