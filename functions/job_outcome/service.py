"""The job-outcome function's work for one "SageMaker Transform Job State Change" event (clients injected).

A job writes under its own folder (``output/_jobs/<job>/``, its ``S3OutputPath``): nothing there can be an earlier
run's. For every input file of the job (read from its manifest) this function

1. matches what the job produced to the file, whichever naming SageMaker used (:func:`logic.match_outputs`);
2. reads the input's current version: a file overwritten while its job ran (the versions sidecar names the version
   the job was started for) ends ``Superseded`` under ``errors/``, and this job's result is not published;
3. copies the file's output to the one documented place, ``output/<rel>.out`` (SSE-KMS with the stack key, as the
   job wrote it), then writes the status record beside it, or under ``errors/`` with the reason; the other kind of
   record and, on failure, an earlier run's ``.out`` are removed (noncurrent versions stay, on the versioned bucket),
   so an earlier success is never reported for a new job.

A superseded job's record never replaces the newer version's: the input's newer version has its own job, which may
end while this one is recorded. The ``Superseded`` record is written only where no record of the input's current
version is in place, in either place, with an S3 conditional write (``IfMatch`` the ETag read, or ``IfNoneMatch``
when the key was empty): a record that changed in between fails the write, and the places are read again
(:meth:`OutcomeRecorder._put_superseded`).

Each file is handled on its own: an exception for one (a key too long, an S3 error) ends as that file's failure
status and the others go on. When any file failed one notice goes to the SNS topic, listing also the files whose
status record could not be written. Re-delivered events rewrite the same records: the function is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from botocore.exceptions import ClientError

from zstc_contract.jobs import COMPLETED, TERMINAL_JOB_STATES, is_stack_job
from zstc_contract.layout import (
    JOBS_FOLDER,
    MAX_KEY_BYTES,
    input_key,
    is_job_output_key,
    key_bytes,
    key_prefix,
    long_key_status_key,
    output_key,
    staged_prefix,
    status_key,
    versions_key,
)
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import OutcomeSettings
from zstc_contract.status import SUCCEEDED, SUPERSEDED, StatusRecord, put_status_record
from zstc_contract.uri import split_uri
from zstc_contract.versions import EntryVersion, decode_versions

from .logic import (
    FileOutcome,
    JobEvent,
    OutputMatch,
    ambiguous_reason,
    candidate_keys,
    count_records,
    failure_notice,
    is_superseded,
    job_output_uri,
    manifest_uri,
    match_outputs,
    newer_result_in_place,
    status_record,
)

NOT_FOUND = ("404", "NoSuchKey", "NotFound")
# A conditional write or delete whose key changed since it was read: the precondition failed (412), a concurrent
# conditional request won (409), or an ``IfMatch`` key is gone (404).
CHANGED: Final = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict", *NOT_FOUND)
SUPERSEDED_WRITE_ATTEMPTS: Final = 4  # reads and conditional writes of one Superseded record before giving up


class ConcurrentWrites(RuntimeError):
    """The status record changed under every conditional write of a Superseded record."""


@dataclass(frozen=True)
class Placed:
    """What one status key holds: its record (None: nothing there, or not a status record) and its ETag (None:
    no object at the key)."""

    record: StatusRecord | None
    etag: str | None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class OutcomeRecorder:
    """Records the outcome of one finished transform job: a status record per input file, a notice on failure."""

    def __init__(self, settings: OutcomeSettings, *, s3: Any, sns: Any, logger: Any, metrics: Any) -> None:
        self.settings = settings
        self.s3 = s3
        self.sns = sns
        self.logger = logger
        self.metrics = metrics

    def process(self, event: dict[str, Any]) -> dict[str, Any]:
        job = JobEvent.from_event(event)
        if not is_stack_job(job.name, self.settings.job_name_prefix) or job.status not in TERMINAL_JOB_STATES:
            self.logger.info("Event ignored", extra={"job_name": job.name, "job_status": job.status})
            return {"job_name": job.name, "ignored": True}
        self.metrics.add_metric(
            name="JobsCompleted" if job.status == COMPLETED else "JobsFailed", unit="Count", value=1
        )
        bucket, key = split_uri(manifest_uri(self.settings, job))
        manifest = decode_manifest(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        entries = manifest.entries
        # The key prefix the entries are relative to: the input prefix, or the job's re-staged folder (the full-key
        # naming spells that one).
        source_prefix = key_prefix(split_uri(manifest.prefix)[1])
        versions = self._versions(job)
        job_prefix = self._job_prefix(job)
        produced = self._produced(job_prefix, entries)  # an S3 error here fails the event: EventBridge retries it
        matches = match_outputs(entries, produced, job_prefix=job_prefix, input_prefix=source_prefix)

        outcomes: list[FileOutcome] = []
        unwritten: list[str] = []
        for relative in entries:
            outcome = self._outcome_or_failure(job, relative, matches[relative], versions.get(relative), job_prefix)
            outcomes.append(outcome)
            if not self._record(job, outcome):
                unwritten.append(relative)

        failed = [o for o in outcomes if not o.succeeded and not o.superseded]
        superseded = [o for o in outcomes if o.superseded]
        self.metrics.add_metric(
            name="FilesSucceeded", unit="Count", value=len(outcomes) - len(failed) - len(superseded)
        )
        self.metrics.add_metric(name="FilesFailed", unit="Count", value=len(failed))
        self.metrics.add_metric(name="FilesSuperseded", unit="Count", value=len(superseded))
        self.metrics.add_metric(name="StatusRecordsNotWritten", unit="Count", value=len(unwritten))
        records = sum(o.records or 0 for o in outcomes)
        record_errors = sum(o.record_errors or 0 for o in outcomes)
        self.metrics.add_metric(name="RecordsProcessed", unit="Count", value=records)
        self.metrics.add_metric(name="RecordErrors", unit="Count", value=record_errors)
        if job.status == COMPLETED and failed:
            self.metrics.add_metric(name="OutputsMissing", unit="Count", value=len(failed))
        if failed or unwritten:
            notice = failure_notice(self.settings, job, failed, len(outcomes), unwritten=unwritten)
            self.sns.publish(TopicArn=self.settings.topic_arn, **notice)  # an error here: the event is retried
        if source_prefix == staged_prefix(self.settings.manifest_prefix, job.name):
            self._remove_staged(source_prefix, job)
        self.logger.info(
            "Job outcome recorded",
            extra={
                "job_name": job.name,
                "job_status": job.status,
                "instance_type": job.instance_type,
                "files": len(outcomes),
                "files_failed": len(failed),
                "files_superseded": len(superseded),
                "status_records_not_written": len(unwritten),
                "output_namings": sorted({o.naming for o in outcomes if o.naming}),
                "records": records,
                "record_errors": record_errors,
            },
        )
        return {
            "job_name": job.name,
            "files": len(outcomes),
            "files_failed": len(failed),
            "files_superseded": len(superseded),
            "status_records_not_written": unwritten,
            "records": records,
        }

    # --- the job ---------------------------------------------------------------------------------------------------

    def _versions(self, job: JobEvent) -> dict[str, EntryVersion]:
        """The versions sidecar of the job's manifest ({} for jobs started before it existed, or unreadable)."""
        key = versions_key(self.settings.manifest_prefix, job.name)
        try:
            return decode_versions(self.s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read())
        except ClientError as error:
            if _code(error) not in NOT_FOUND:
                self.logger.warning(
                    "Could not read the versions sidecar", extra={"key": key, "error_code": _code(error)}
                )
        except ValueError:
            self.logger.warning("The versions sidecar is not one", extra={"key": key})
        return {}

    def _job_prefix(self, job: JobEvent) -> str:
        return key_prefix(split_uri(job_output_uri(self.settings, job))[1])

    def _produced(self, job_prefix: str, entries: tuple[str, ...]) -> set[str]:
        """The keys the job wrote: its whole folder; for a job of an earlier version (``S3OutputPath`` the shared
        output prefix, which also holds every other run's outputs) only the candidate names of its entries."""
        if is_job_output_key(job_prefix, self.settings.output_prefix):
            return set(self._list(job_prefix))
        found: set[str] = set()
        for relative in entries:
            for key in set(candidate_keys(job_prefix, relative, self.settings.input_prefix).values()):
                if key in self._list(key, limit=1):
                    found.add(key)
        return found

    def _remove_staged(self, folder: str, job: JobEvent) -> None:
        """The job read re-staged copies of its files: they served their purpose (the bucket's lifecycle rule
        removes what this leaves, e.g. after an error here)."""
        try:
            keys = self._list(folder)
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[start : start + 1000]]
                self.s3.delete_objects(Bucket=self.settings.bucket, Delete={"Objects": chunk, "Quiet": True})
        except ClientError as error:
            self.logger.warning(
                "Could not remove the job's re-staged files", extra={"job_name": job.name, "error_code": _code(error)}
            )

    def _list(self, prefix: str, limit: int | None = None) -> list[str]:
        request: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
        if limit is not None:
            request["PaginationConfig"] = {"MaxItems": limit}
        pages = self.s3.get_paginator("list_objects_v2").paginate(**request)
        return [str(item["Key"]) for page in pages for item in page.get("Contents", [])]

    # --- one file --------------------------------------------------------------------------------------------------

    def _outcome_or_failure(
        self, job: JobEvent, relative: str, match: OutputMatch, version: EntryVersion | None, job_prefix: str
    ) -> FileOutcome:
        version_id = version.version_id if version else None
        try:
            return self._file_outcome(job, relative, match, version_id, job_prefix)
        except Exception as error:
            self.logger.exception(
                "Could not record the file's outcome", extra={"job_name": job.name, "relative_key": relative[:256]}
            )
            problem = (
                f"The job-outcome function could not publish this file's result ({type(error).__name__}: "
                f"{str(error)[:300]}). Upload the file again; if it fails the same way, report it to the maintainers."
            )
            return FileOutcome(relative, False, match.key is not None, version_id=version_id, problem=problem)

    def _file_outcome(
        self, job: JobEvent, relative: str, match: OutputMatch, version_id: str | None, job_prefix: str
    ) -> FileOutcome:
        bucket = self.settings.bucket
        canonical = output_key(self.settings.output_prefix, relative)
        seed = FileOutcome(
            relative, False, match.key is not None, naming=match.naming, job_output=match.key, version_id=version_id
        )
        if key_bytes(canonical) > MAX_KEY_BYTES:
            return replace(
                seed, problem=f"The file's key is too long for its output key (S3 allows {MAX_KEY_BYTES} bytes)."
            )
        if is_job_output_key(canonical, self.settings.output_prefix):
            reserved = input_key(self.settings.input_prefix, JOBS_FOLDER)
            problem = (
                f"Input keys under {reserved} are reserved: their outputs would land in the transform jobs' own "
                "folders. Move the file and upload it again."
            )
            return replace(seed, problem=problem)
        current = self._current_version(input_key(self.settings.input_prefix, relative)) if version_id else None
        seed = replace(seed, current_version_id=current)
        if is_superseded(version_id, current):
            return replace(seed, superseded=True)
        if match.ambiguous_with:
            return replace(seed, output_found=False, problem=ambiguous_reason(match, job_prefix))
        if match.key is None:  # SageMaker uploads an object's output only when the whole object succeeded
            return seed
        head = self.s3.head_object(Bucket=bucket, Key=match.key)
        if match.key != canonical:
            self._copy(match.key, canonical, head)
        if int(head.get("ContentLength", 0)) > self.settings.count_records_max_bytes:
            return replace(seed, succeeded=True)
        records, errors = count_records(self.s3.get_object(Bucket=bucket, Key=match.key)["Body"].iter_lines())
        return replace(seed, succeeded=True, records=records, record_errors=errors)

    def _current_version(self, key: str) -> str | None:
        """The input's current VersionId (None: deleted, or an unversioned bucket)."""
        try:
            head = self.s3.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            if _code(error) in NOT_FOUND:
                return None
            raise
        version = head.get("VersionId")
        return str(version) if version and version != "null" else None

    def _copy(self, source: str, target: str, head: dict[str, Any]) -> None:
        """Server-side copy (multipart past 5 GB), encrypted as SageMaker wrote it: SSE-KMS with the stack key."""
        extra: dict[str, str] = {}
        if head.get("ServerSideEncryption") == "aws:kms":
            extra["ServerSideEncryption"] = "aws:kms"
            if head.get("SSEKMSKeyId"):
                extra["SSEKMSKeyId"] = str(head["SSEKMSKeyId"])
        self.s3.copy({"Bucket": self.settings.bucket, "Key": source}, self.settings.bucket, target, ExtraArgs=extra)

    def _record(self, job: JobEvent, outcome: FileOutcome) -> bool:
        """Write the file's status record (and clear the other place); False when it could not be written."""
        object_key = input_key(self.settings.input_prefix, outcome.relative)
        log = {"object_key": object_key[:256], "job_name": job.name}
        try:
            key, record = status_record(self.settings, job, outcome)
            if key_bytes(key) > MAX_KEY_BYTES:  # the file's own name is too long for one: a fixed-length one
                key = long_key_status_key(self.settings.errors_prefix, object_key)
            if outcome.superseded:
                # Nothing of the canonical place is removed: it is the newer version's, or becomes it.
                written = self._put_superseded(job, outcome, key)
                if written is None:
                    self.logger.info("File superseded: its newer version's result is already published", extra=log)
                    return True
                record = written
            else:
                put_status_record(self.s3, self.settings.bucket, key, record)
                self._clear_other_place(outcome, record)
        except Exception:
            self.logger.exception("Could not write the file's status record", extra=log)
            return False
        if record.state == SUCCEEDED:
            self.logger.info("File succeeded", extra={**log, "output_naming": outcome.naming})
        elif record.state == SUPERSEDED:
            self.logger.warning("File superseded", extra={**log, "reason": record.reason})
        else:
            self.logger.warning("File failed", extra={**log, "reason": record.reason})
        return True

    def _put_superseded(self, job: JobEvent, outcome: FileOutcome, key: str) -> StatusRecord | None:
        """Write the superseded job's record at ``key`` unless a record of the input's current version is in place
        (there, or next to the output): the record written, or None when the newer result stands.

        Each try reads both places, then the input's current version, and writes only if ``key`` is unchanged since
        read (``IfMatch`` its ETag, ``IfNoneMatch`` when it was empty); a changed key is read again. A newer success
        lands next to the output, then removes the record under ``errors/``: if that removal came before this write
        the write sees nothing changed, so once written the output's place is read again and, holding the current
        version's record, the Superseded record just written is removed (``IfMatch`` its own ETag: a record that
        replaced it stays). ConcurrentWrites after SUPERSEDED_WRITE_ATTEMPTS tries."""
        relative = outcome.relative
        beside_output = status_key(self.settings.output_prefix, relative)
        others = [beside_output] if beside_output != key and key_bytes(beside_output) <= MAX_KEY_BYTES else []
        object_key = input_key(self.settings.input_prefix, relative)
        for _ in range(SUPERSEDED_WRITE_ATTEMPTS):
            here = self._placed(key)
            elsewhere = [self._placed(k).record for k in others]
            # The input's version read after the records: a newer version's record read above is of this version,
            # or of one that was current when it was written (then this write's condition fails if it changed).
            current = self._current_version(object_key)
            if current is None or current == outcome.version_id:  # deleted since, or the job's own again: as read
                current = outcome.current_version_id
            if newer_result_in_place([here.record, *elsewhere], current):
                return None
            _, record = status_record(self.settings, job, replace(outcome, current_version_id=current))
            condition = {"IfMatch": here.etag} if here.etag else {"IfNoneMatch": "*"}
            try:
                answer = put_status_record(self.s3, self.settings.bucket, key, record, **condition)
            except ClientError as error:
                if _code(error) not in CHANGED:
                    raise
                self.logger.info(
                    "The status record changed while a superseded job was recorded: reading it again",
                    extra={"status_key": key[:256], "job_name": job.name, "error_code": _code(error)},
                )
                continue
            if newer_result_in_place([self._placed(k).record for k in others], current):
                self._remove_if_unchanged(key, str(answer.get("ETag", "")))
                return None
            return record
        raise ConcurrentWrites(
            f"the status record {key[:256]} changed under each of {SUPERSEDED_WRITE_ATTEMPTS} conditional writes"
        )

    def _placed(self, key: str) -> Placed:
        try:
            answer = self.s3.get_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            if _code(error) in NOT_FOUND:
                return Placed(None, None)
            raise
        etag = str(answer.get("ETag") or "") or None
        try:
            return Placed(StatusRecord.decode(answer["Body"].read()), etag)
        except ValueError:  # not JSON, or not an object: replaced like any record of an earlier version
            return Placed(None, etag)

    def _remove_if_unchanged(self, key: str, etag: str) -> None:
        """Remove the object at ``key`` if it is still the one of ``etag`` (S3 conditional delete); without an ETag
        nothing is removed (what is there might be another job's)."""
        if not etag:
            return
        try:
            self.s3.delete_object(Bucket=self.settings.bucket, Key=key, IfMatch=etag)
        except ClientError as error:
            if _code(error) not in CHANGED:
                raise

    def _clear_other_place(self, outcome: FileOutcome, record: StatusRecord) -> None:
        """One place per input: a success removes an earlier failure's record; anything else removes an earlier
        run's ``.out`` and success record, which would otherwise be read as this job's result."""
        relative = outcome.relative
        if record.state == SUCCEEDED:
            stale = [status_key(self.settings.errors_prefix, relative)]
        else:
            stale = [
                output_key(self.settings.output_prefix, relative),
                status_key(self.settings.output_prefix, relative),
            ]
        for key in stale:
            self.s3.delete_object(Bucket=self.settings.bucket, Key=key)
