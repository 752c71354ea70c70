"""Upload a prepared file to the stack's input prefix and follow it through the batch path.

A state file next to the input (``FILE.zstc-state.json``) is written *before* the upload starts and updated after
it, so an interrupted ``zstc submit`` (Ctrl-C, lost connection) never loses or duplicates an upload: ``zstc wait
FILE`` finds the object (or finishes the upload) and resumes waiting.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from zstc import results
from zstc.errors import InputError, JobFailedError, StillWaitingError, ZstcError
from zstc.inputs import Options, PreparedInput
from zstc.jobs import file_status, job_inputs
from zstc.stack import StackOutputs, client
from zstc_contract.jobs import COMPLETED, FAILED_JOB_STATES
from zstc_contract.status import StatusRecord
from zstc_contract.uri import s3_uri, split_uri
from zstc_contract.versions import version_id_of

STATE_VERSION = 1
SUBMIT_FOLDER = "zstc"  # uploads land under <input prefix>zstc/


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
        s3.upload_fileobj(
            prepared.open_body(),
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


def job_covers(s3: Any, description: dict[str, Any], stack: StackOutputs, bucket: str, key: str) -> bool:
    """Whether a transform job's input includes ``s3://bucket/key`` (an S3 prefix, or a manifest listing it, or
    listing its re-staged copy)."""
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    if source.get("S3DataType") == "ManifestFile":
        return s3_uri(bucket, key) in job_inputs(s3, description, input_prefix=stack.input_prefix)
    try:
        source_bucket, source_prefix = split_uri(source.get("S3Uri", ""))
    except ValueError:
        return False
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
                if job_covers(self.s3, description, self.stack, self.state.bucket, self.state.key):
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

    def _ours(self, record: StatusRecord | None) -> bool:
        """Whether a status record answers this upload: it names our input version (the job-outcome function's
        ``version_id``, or the trigger's ``revision``); records without one, or an upload whose version is unknown,
        are taken as ours: unversioned buckets and older stacks."""
        mine = self.state.version_id
        if mine is None or record is None:
            return True
        return (record.version_id or version_id_of(record.revision or "")) in (None, mine)

    def poll(self) -> tuple[Progress, str | None]:
        """One look. Returns the progress and, when ready, the output's key. Raises JobFailedError on failure.

        The status record is looked up where the outcome function or the trigger writes it, the hashed name of a
        key too long for its derived keys included (:func:`zstc.jobs.file_status`)."""
        state = self.state
        output_key = self.stack.output_key(state.key)
        # A record of an earlier upload of the same key (another version) is not this upload's answer: wait on.
        if self._exists(output_key):
            success = file_status(self.s3, self.stack, state.key, succeeded=True)
            if self._ours(success.record if success else None):
                return Progress(stage="outputs ready", job_name=state.job_name, job_state=COMPLETED), output_key
        failure = file_status(self.s3, self.stack, state.key, succeeded=False)
        if failure is not None and self._ours(failure.record):
            raise JobFailedError(
                failure_message(state.file, failure.record, state.job_name, self.stack.bucket, failure.key)
            )
        if not state.job_name:
            state.job_name = self.find_job()
        if not state.job_name:
            return Progress(stage="queued", detail="waiting for the batch trigger to start a transform job"), None
        description = self.sagemaker.describe_transform_job(TransformJobName=state.job_name)
        job_state = description.get("TransformJobStatus", "?")
        if job_state in FAILED_JOB_STATES:
            # the job-outcome function writes the status record shortly after; give it a poll or two
            reason = description.get("FailureReason", "no reason given")
            return Progress(stage=f"job {job_state}", job_name=state.job_name, job_state=job_state, detail=reason), None
        return Progress(stage=f"job {job_state}", job_name=state.job_name, job_state=job_state), None


def failure_message(file: str, record: StatusRecord | None, job_name: str | None, bucket: str, key: str) -> str:
    """The one line a failure status record gives: its state, the job (or none: refused before any), the job's
    status (``NotStarted`` when none ran), the reason and where the record is."""
    state = (record.state if record else None) or "Failed"
    job = (record.job_name if record else None) or job_name
    where = f"in transform job {job}" if job else "before any transform job"
    job_status = f" (job status {record.job_status})" if record is not None and record.job_status else ""
    reason = (record.reason if record else None) or "the status record gives no reason"
    return f"{file}: {state} {where}{job_status}: {reason} (status record {s3_uri(bucket, key)})"


def wait_for_output(
    watcher: Watcher,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_progress: Callable[[Progress], None],
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll until the output is there; returns its key. Raises JobFailedError or StillWaitingError."""
    started = time.monotonic()
    failed_since: float | None = None
    while True:
        progress, output_key = watcher.poll()
        on_progress(progress)
        if output_key is not None:
            return output_key
        if progress.job_state in FAILED_JOB_STATES:
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


def download_output(s3: Any, bucket: str, key: str) -> IO[bytes]:
    """The output object in a temporary file (streamed: never whole in memory), rewound."""
    handle: IO[bytes] = tempfile.TemporaryFile(prefix="zstc-output-")  # noqa: SIM115 - the caller closes it
    try:
        s3.download_fileobj(bucket, key, handle)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    return handle


# --- the whole flow, shared by `zstc submit` / `zstc wait` and Classifier.submit ---------------------------------


BeforeUpload = Callable[[PreparedInput, StackOutputs], None]


@dataclass(kw_only=True)
class Submission:
    """A file on its way through the batch path: what was uploaded, where, and its state file."""

    aws: Any
    stack: StackOutputs
    prepared: PreparedInput
    state: SubmitState
    state_file: Path

    @property
    def uri(self) -> str:
        return s3_uri(self.state.bucket, self.state.key)


def pending(state_file: Path, prepared: PreparedInput) -> SubmitState | None:
    """An earlier submission of the same content that is not finished (uploading or uploaded), if there is one."""
    if not state_file.exists():
        return None
    previous = SubmitState.load(state_file)
    if previous.status in ("uploading", "uploaded") and previous.sha256 == prepared.sha256:
        return previous
    return None


def start(
    aws: Any,
    stack: StackOutputs,
    prepared: PreparedInput,
    *,
    resume: bool,
    force: bool = False,
    before_upload: BeforeUpload | None = None,
    on_upload_progress: Callable[[int], None] | None = None,
    on_resume: Callable[[str], None] | None = None,
) -> Submission:
    """Upload ``prepared`` once, or pick up its pending earlier submission.

    ``resume=False`` (``zstc submit``) refuses when the same content is pending; ``resume=True``
    (``Classifier.submit``) continues it instead, finishing an interrupted upload. ``before_upload`` runs after
    validation and before anything is uploaded: the one place for checks that may stop a submission (such as a cost
    estimate to confirm); it raises to stop. ``force`` uploads again even when the same content is pending.
    """
    state_file = state_path(prepared.path)
    previous = None if force else pending(state_file, prepared)
    s3 = client(aws, "s3")
    if previous is not None:
        if not resume:
            raise ZstcError(
                f"{prepared.path.name} was already submitted (s3://{previous.bucket}/{previous.key}). Run "
                f"`zstc wait {prepared.path}` to follow it, or pass --force to upload it again."
            )
        resume_upload(aws, previous, prepared, state_file, on_resume=on_resume, progress=on_upload_progress)
        return Submission(aws=aws, stack=stack, prepared=prepared, state=previous, state_file=state_file)
    if before_upload is not None:
        before_upload(prepared, stack)
    state = new_state(stack, prepared, prepared.options)
    upload(s3, state, prepared, state_file, on_upload_progress)
    return Submission(aws=aws, stack=stack, prepared=prepared, state=state, state_file=state_file)


def resume_upload(
    aws: Any,
    state: SubmitState,
    prepared: PreparedInput,
    state_file: Path,
    *,
    on_resume: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Finish an interrupted upload (nothing to do when the object is there with our content)."""
    s3 = client(aws, "s3")
    if state.status == "uploading" or uploaded_object(s3, state) is None:
        if on_resume is not None:
            on_resume("The upload was interrupted; finishing it.")
        upload(s3, state, prepared, state_file, progress)


def finish(
    submission: Submission,
    *,
    poll: float,
    timeout: float,
    output: Path | None,
    on_progress: Callable[[Progress], None],
    rows: int = 10,
    on_result: Callable[[results.Result], None] | None = None,
) -> tuple[Path, results.Summary]:
    """Wait for the output, join it to the input rows (streamed), write the results file and mark the state done.

    Every result also goes to ``on_result`` (in input order) when given. Returns the results file and a summary.
    """
    state, state_file = submission.state, submission.state_file
    s3 = client(submission.aws, "s3")
    watcher = Watcher(s3=s3, sagemaker=client(submission.aws, "sagemaker"), stack=submission.stack, state=state)

    def progress(update: Progress) -> None:
        if update.job_name and state.job_name == update.job_name and state.status == "uploaded":
            state.save(state_file)
        on_progress(update)

    try:
        output_key = wait_for_output(watcher, poll_seconds=poll, timeout_seconds=timeout, on_progress=progress)
    except JobFailedError:
        state.status = "failed"
        state.save(state_file)
        raise
    summary = results.Summary(rows=rows)
    with download_output(s3, submission.stack.bucket, output_key) as body:

        def lines() -> Any:
            body.seek(0)
            return results.iter_output(body)

        joined = results.join_stream(submission.prepared, lines)
        if on_result is not None:
            joined = _tee(joined, on_result)
        target = results.write_results(submission.prepared, joined, output, summary=summary)
    state.status, state.results = "done", str(target)
    state.save(state_file)
    return target, summary


def _tee(items: Any, sink: Callable[[results.Result], None]) -> Any:
    for item in items:
        sink(item)
        yield item
