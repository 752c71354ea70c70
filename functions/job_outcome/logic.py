"""Pure logic of the job-outcome function: which produced object is which input's output, which status record goes
where, and what the failure notice says.

No AWS calls here; :mod:`job_outcome.service` reads the manifest and the outputs and writes what this module
decides. Settings, key names and the status record are the contract's (``zstc_contract``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zstc_contract.jobs import COMPLETED, STOPPED
from zstc_contract.layout import (
    BASE_NAME,
    OUTPUT_NAMINGS,
    OUTPUT_SUFFIX,
    input_key,
    job_output_prefix,
    manifest_key,
    output_key,
    output_names,
)
from zstc_contract.settings import OutcomeSettings
from zstc_contract.status import OutcomeDetail, StatusRecord
from zstc_contract.uri import s3_uri
from zstc_contract.versions import version_id_of


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


def job_output_uri(settings: OutcomeSettings, job: JobEvent) -> str:
    """Where the job wrote: its event's ``S3OutputPath`` (the trigger sets the job's own folder)."""
    return job.output_path or s3_uri(settings.bucket, job_output_prefix(settings.output_prefix, job.name))


# --- which produced object is which input's output -------------------------------------------------------------


@dataclass(frozen=True)
class OutputMatch:
    """The object the job produced for one manifest entry: ``key`` (None: none), the naming it matched by (one of
    ``OUTPUT_NAMINGS``) and the others that spell the same key; ``ambiguous_with``: other entries the same object
    may belong to (SageMaker named by base name and two entries share one): then ``key`` is not taken as theirs."""

    relative: str
    key: str | None = None
    naming: str | None = None
    also: tuple[str, ...] = ()
    ambiguous_with: tuple[str, ...] = ()


def candidate_keys(job_prefix: str, relative: str, input_prefix: str) -> dict[str, str]:
    """The output key each naming gives ``relative`` under the job's prefix."""
    return {form: f"{job_prefix}{name}{OUTPUT_SUFFIX}" for form, name in output_names(relative, input_prefix).items()}


def match_outputs(
    entries: Sequence[str], produced: Iterable[str], *, job_prefix: str, input_prefix: str
) -> dict[str, OutputMatch]:
    """Match what a job produced under ``job_prefix`` to its manifest entries.

    SageMaker names every output of a job the same way, so the job's naming is the one the produced keys give away:
    a key that only one naming can spell (``a/b.jsonl.out`` is the relative key, never a base name). Where no key
    tells (every entry at the top, where relative key and base name coincide), any naming is accepted. Each entry
    then takes the first of its candidates (relative key, full key, base name) that was produced, unless another
    entry spells the same key in the accepted namings: that entry and this one are ambiguous, and neither is guessed.
    """
    keys = set(produced)
    candidates = {relative: candidate_keys(job_prefix, relative, input_prefix) for relative in entries}
    namings_of: dict[str, set[str]] = defaultdict(set)  # produced key → the namings that spell it for some entry
    for forms in candidates.values():
        for form, key in forms.items():
            if key in keys:
                namings_of[key].add(form)
    telling = {next(iter(forms)) for forms in namings_of.values() if len(forms) == 1}
    accepted = [form for form in OUTPUT_NAMINGS if form in telling] or list(OUTPUT_NAMINGS)
    owners: dict[str, set[str]] = defaultdict(set)  # candidate key → entries spelling it in an accepted naming
    for relative, forms in candidates.items():
        for form in accepted:
            owners[forms[form]].add(relative)
    matches: dict[str, OutputMatch] = {}
    for relative, forms in candidates.items():
        found = next((form for form in accepted if forms[form] in keys), None)
        if found is None:
            matches[relative] = OutputMatch(relative)
            continue
        key = forms[found]
        others = tuple(sorted(owners[key] - {relative}))
        if others:
            matches[relative] = OutputMatch(relative, naming=found, ambiguous_with=others)
            continue
        also = tuple(f for f in OUTPUT_NAMINGS if f != found and forms[f] == key)
        matches[relative] = OutputMatch(relative, key=key, naming=found, also=also)
    return matches


def is_superseded(job_version_id: str | None, current_version_id: str | None) -> bool:
    """The input was overwritten while its job ran: both versions are known and differ (a deleted input, or one
    of unknown version, is not)."""
    return job_version_id is not None and current_version_id is not None and job_version_id != current_version_id


def record_version(record: StatusRecord) -> str | None:
    """The input version a status record is of: the job-outcome function's ``version_id``, or the VersionId the
    trigger's ``revision`` names (``v-<VersionId>``); None when it names none."""
    if record.version_id:
        return record.version_id
    return version_id_of(record.revision) if record.revision else None


def newer_result_in_place(records: Iterable[StatusRecord | None], current_version_id: str | None) -> bool:
    """Whether one of the file's status records in place (``None``: no record there) is of the input's current
    version: then a superseded job of an earlier version writes nothing (that record is the file's result)."""
    return current_version_id is not None and any(
        record is not None and record_version(record) == current_version_id for record in records
    )


# --- what became of each file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileOutcome:
    relative: str
    succeeded: bool
    output_found: bool
    records: int | None = None
    record_errors: int | None = None
    naming: str | None = None  # which of OUTPUT_NAMINGS the output matched by
    job_output: str | None = None  # its key in the job's folder
    version_id: str | None = None  # the input version the job was started for
    current_version_id: str | None = None  # the input's version when the job ended
    superseded: bool = False
    problem: str | None = None  # why the file failed, when it is not the job's own reason


def status_record(settings: OutcomeSettings, job: JobEvent, outcome: FileOutcome) -> tuple[str, StatusRecord]:
    """(key, record) of one input file's status record: under ``output/`` on success, ``errors/`` otherwise."""
    input_uri = s3_uri(settings.bucket, input_key(settings.input_prefix, outcome.relative))
    out_uri = s3_uri(settings.bucket, output_key(settings.output_prefix, outcome.relative))
    detail = OutcomeDetail(
        version_id=outcome.version_id,
        current_version_id=outcome.current_version_id,
        output_naming=outcome.naming,
        job_output=s3_uri(settings.bucket, outcome.job_output) if outcome.job_output else None,
    )
    record: StatusRecord
    if outcome.succeeded and not outcome.superseded:
        record = StatusRecord.succeeded(
            input=input_uri,
            output=out_uri,
            job_name=job.name,
            job_status=job.status,
            finished_at=job.time,
            instance_type=job.instance_type,
            records=outcome.records,
            record_errors=outcome.record_errors,
            detail=detail,
        )
    else:
        record = StatusRecord.job_failed(
            input=input_uri,
            job_name=job.name,
            job_status=job.status,
            finished_at=job.time,
            instance_type=job.instance_type,
            reason=superseded_reason(job, outcome)
            if outcome.superseded
            else outcome.problem or failure_reason(settings, job),
            detail=detail,
        )
        if outcome.superseded:
            record = record.as_superseded()
    prefixes = {"output_prefix": settings.output_prefix, "errors_prefix": settings.errors_prefix}
    return record.key(**prefixes, relative=outcome.relative), record


def superseded_reason(job: JobEvent, outcome: FileOutcome) -> str:
    return (
        f"The file was overwritten while job {job.name} read version {outcome.version_id}: the current version is "
        f"{outcome.current_version_id}, whose own job writes this file's result. This job's result is not published."
    )


def failure_reason(settings: OutcomeSettings, job: JobEvent) -> str:
    """What a failed file's status record says went wrong, and what to do."""
    if job.status == COMPLETED:  # the job says done but wrote nothing named after this file
        return (
            "SageMaker reported the job Completed but wrote no output named after this file (by its "
            f"{', '.join(OUTPUT_NAMINGS)}, then {OUTPUT_SUFFIX}) under {job_output_uri(settings, job)}. Report the "
            "keys found there to the maintainers."
        )
    if job.status == STOPPED:
        return "The transform job was stopped before this file finished. Upload the file again to retry it."
    return (
        f"{job.failure_reason or 'SageMaker gave no reason.'} The job's CloudWatch logs "
        f"(/aws/sagemaker/TransformJobs, stream prefix {job.name}) name the failing record; fix it and upload "
        "the file again."
    )


def ambiguous_reason(match: OutputMatch, job_prefix: str) -> str:
    return (
        f"The job's outputs are named by {BASE_NAME}, and {len(match.ambiguous_with)} other file(s) of the same job "
        f"share this file's name ({', '.join(match.ambiguous_with[:5])}): which output under {job_prefix} is whose "
        "cannot be told, so none is published. Give the files distinct names (or upload them apart) and upload again."
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


def failure_notice(
    settings: OutcomeSettings,
    job: JobEvent,
    failed: list[FileOutcome],
    total: int,
    *,
    unwritten: Sequence[str] = (),
) -> dict[str, str]:
    """SNS subject (≤ 100 ASCII characters) and message for a job with failed files; ``unwritten``: relative keys of
    files whose status record could not be written (the notice is then their only record)."""
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
    if unwritten:
        body["status_records_not_written"] = [
            s3_uri(settings.bucket, input_key(settings.input_prefix, relative))[:2048] for relative in unwritten[:50]
        ]
    return {"Subject": subject, "Message": json.dumps(body, ensure_ascii=False, indent=2)}
