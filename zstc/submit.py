"""Upload a prepared file to the stack's input prefix and follow it through the batch path.

A state file next to the input (``FILE.zstc-state.json``) is written *before* the upload starts and updated after
it, so an interrupted ``zstc submit`` (Ctrl-C, lost connection) never loses or duplicates an upload: ``zstc wait
FILE`` finds the object (or finishes the upload) and resumes waiting.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from zstc.errors import InputError, JobFailedError, StillWaitingError, ZstcError
from zstc.inputs import Options, PreparedInput
from zstc.stack import StackOutputs

STATE_VERSION = 1
SUBMIT_FOLDER = "zstc"  # uploads land under <input prefix>zstc/
TERMINAL_JOB_STATES = ("Completed", "Failed", "Stopped")


def state_path(path: Path) -> Path:
    return path.with_name(path.name + ".zstc-state.json")


@dataclass(kw_only=True)
class SubmitState:
    """What was uploaded where, so that ``zstc wait FILE`` can resume."""

    file: str
    sha256: str  # of the converted body that was uploaded
    stack_name: str
    region: str
    bucket: str
    key: str
    options: dict[str, Any]
    status: str = "uploading"  # uploading -> uploaded -> done | failed
    created_at: str = ""
    uploaded_at: str | None = None
    version_id: str | None = None
    job_name: str | None = None
    results: str | None = None
    version: int = STATE_VERSION
    history: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SubmitState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise InputError(f"Cannot read {path} ({error}). Delete it and submit the file again.") from error


def object_key(stack: StackOutputs, path: Path, sha256: str, now: datetime) -> str:
    """``input/zstc/<name>-<UTC time>-<sha8>.jsonl``: unique per submission, readable, safe in S3 and job names."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "file"
    return f"{stack.input_prefix}{SUBMIT_FOLDER}/{stem[:60]}-{now:%Y%m%dT%H%M%SZ}-{sha256[:8]}.jsonl"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def new_state(stack: StackOutputs, prepared: PreparedInput, options: Options) -> SubmitState:
    now = _now()
    return SubmitState(
        file=prepared.path.name,
        sha256=prepared.sha256,
        stack_name=stack.stack_name,
        region=stack.region,
        bucket=stack.bucket,
        key=object_key(stack, prepared.path, prepared.sha256, now),
        options=options.to_json(),
        created_at=now.isoformat(),
    )


def uploaded_object(s3: Any, state: SubmitState) -> dict[str, Any] | None:
    """The uploaded object if it is there with our content (checked with the sha256 we stored in its metadata)."""
    try:
        head = s3.head_object(Bucket=state.bucket, Key=state.key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    if head.get("Metadata", {}).get("zstc-sha256") != state.sha256:
        raise ZstcError(
            f"s3://{state.bucket}/{state.key} exists but holds other content. Delete {state_path(Path(state.file))} "
            "and submit the file again."
        )
    return head


def upload(
    s3: Any,
    state: SubmitState,
    prepared: PreparedInput,
    state_file: Path,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Upload once. The state is saved as 'uploading' first, so an interruption leaves a trail to resume from."""
    state.status = "uploading"
    state.save(state_file)
    head = uploaded_object(s3, state)
    if head is None:
        body = prepared.body
        s3.upload_fileobj(
            io.BytesIO(body),
            state.bucket,
            state.key,
            ExtraArgs={"ContentType": "application/jsonlines", "Metadata": {"zstc-sha256": state.sha256}},
            Callback=progress,
        )
        head = uploaded_object(s3, state)
        if head is None:
            raise ZstcError(f"Upload of s3://{state.bucket}/{state.key} did not land. Run `zstc wait {state.file}`.")
    state.status = "uploaded"
    state.version_id = head.get("VersionId")
    last_modified = head.get("LastModified")
    state.uploaded_at = (last_modified or _now()).astimezone(UTC).isoformat()
    state.save(state_file)


# --- following the file through the batch path ---------------------------------------------------------------------


@dataclass(kw_only=True)
class Progress:
    stage: str  # "queued" | "job started" | "job <State>" | "outputs ready"
    job_name: str | None = None
    job_state: str | None = None
    detail: str = ""


def _s3_uri(uri: str) -> tuple[str, str]:
    without = uri.removeprefix("s3://")
    bucket, _, key = without.partition("/")
    return bucket, key


def job_covers(s3: Any, description: dict[str, Any], bucket: str, key: str) -> bool:
    """Whether a transform job's input includes ``s3://bucket/key`` (an S3 prefix, or a manifest listing it)."""
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    uri = source.get("S3Uri", "")
    if source.get("S3DataType") == "ManifestFile":
        manifest_bucket, manifest_key = _s3_uri(uri)
        try:
            entries = json.loads(s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read())
        except (ClientError, ValueError):
            return False
        if not entries or not isinstance(entries[0], dict):
            return False
        prefix = entries[0].get("prefix", "")
        return f"s3://{bucket}/{key}" in {prefix + str(entry) for entry in entries[1:]}
    source_bucket, source_prefix = _s3_uri(uri)
    return source_bucket == bucket and key.startswith(source_prefix)


class Watcher:
    """Polls S3 and SageMaker for one submitted file: job found → job state → output or status record."""

    def __init__(self, *, s3: Any, sagemaker: Any, stack: StackOutputs, state: SubmitState) -> None:
        self.s3, self.sagemaker, self.stack, self.state = s3, sagemaker, stack, state
        self._checked_jobs: set[str] = set()

    def find_job(self) -> str | None:
        uploaded = _parse_time(self.state.uploaded_at) or _now()
        paginator = self.sagemaker.get_paginator("list_transform_jobs")
        pages = paginator.paginate(
            NameContains=self.stack.transform_job_prefix,
            CreationTimeAfter=uploaded - timedelta(minutes=5),
            SortBy="CreationTime",
            SortOrder="Descending",
        )
        for page in pages:
            for summary in page.get("TransformJobSummaries", []):
                name = summary["TransformJobName"]
                if name in self._checked_jobs:
                    continue
                description = self.sagemaker.describe_transform_job(TransformJobName=name)
                if job_covers(self.s3, description, self.state.bucket, self.state.key):
                    return str(name)
                self._checked_jobs.add(name)
        return None

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.stack.bucket, Key=key)
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _read_json(self, key: str) -> dict[str, Any]:
        try:
            data = json.loads(self.s3.get_object(Bucket=self.stack.bucket, Key=key)["Body"].read())
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def poll(self) -> tuple[Progress, bytes | None]:
        """One look. Returns the progress and, when ready, the output body. Raises JobFailedError on failure."""
        state = self.state
        output_key = self.stack.output_key(state.key)
        _, failure_key = self.stack.status_keys(state.key)
        if self._exists(output_key):
            body = self.s3.get_object(Bucket=self.stack.bucket, Key=output_key)["Body"].read()
            return Progress(stage="outputs ready", job_name=state.job_name, job_state="Completed"), body
        if self._exists(failure_key):
            record = self._read_json(failure_key)
            reason = (
                record.get("failure_reason")
                or record.get("FailureReason")
                or record.get("reason")
                or record.get("message")
                or json.dumps(record)[:300]
            )
            job = record.get("job_name") or record.get("TransformJobName") or state.job_name or "?"
            raise JobFailedError(
                f"{state.file} failed in transform job {job}: {reason} "
                f"(status record s3://{self.stack.bucket}/{failure_key})"
            )
        if not state.job_name:
            state.job_name = self.find_job()
        if not state.job_name:
            return Progress(stage="queued", detail="waiting for the batch trigger to start a transform job"), None
        description = self.sagemaker.describe_transform_job(TransformJobName=state.job_name)
        job_state = description.get("TransformJobStatus", "?")
        if job_state in ("Failed", "Stopped"):
            # the job-outcome function writes the status record shortly after; give it a poll or two
            reason = description.get("FailureReason", "no reason given")
            return Progress(stage=f"job {job_state}", job_name=state.job_name, job_state=job_state, detail=reason), None
        return Progress(stage=f"job {job_state}", job_name=state.job_name, job_state=job_state), None


def wait_for_output(
    watcher: Watcher,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_progress: Callable[[Progress], None],
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    started = time.monotonic()
    failed_since: float | None = None
    while True:
        progress, body = watcher.poll()
        on_progress(progress)
        if body is not None:
            return body
        if progress.job_state in ("Failed", "Stopped"):
            failed_since = failed_since or time.monotonic()
            if time.monotonic() - failed_since > max(30.0, 3 * poll_seconds):
                raise JobFailedError(
                    f"Transform job {progress.job_name} {progress.job_state}: {progress.detail}. "
                    f"See `zstc jobs` and the job's CloudWatch logs."
                )
        if time.monotonic() - started > timeout_seconds:
            raise StillWaitingError(
                f"Still waiting after {timeout_seconds:.0f} s (stage: {progress.stage}). The work goes on in AWS: "
                f"run `zstc wait {watcher.state.file}` to resume. If nothing starts, check the dead-letter queue."
            )
        sleep(poll_seconds)
