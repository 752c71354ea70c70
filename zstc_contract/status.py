"""The status record: one JSON object per input file saying what became of it (the file's documented result).

Written by the job-outcome function (``Succeeded`` next to the output, ``Failed`` or ``Superseded`` under
``errors/``, each with the :class:`OutcomeDetail` of the input version the job read) and by the trigger (``Skipped``
for an empty file; ``Failed`` when no instance type has quota, when the file is refused before any job, or on its
last try before the dead-letter queue); read by ``zstc``. Each kind keeps its own fields, in its own order:
:attr:`StatusRecord.fields` says which; the constructors set it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from zstc_contract.layout import status_key

SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
SKIPPED: Final = "Skipped"
SUPERSEDED: Final = "Superseded"  # the input was overwritten while its job ran: that job's result is not published
NOT_STARTED: Final = "NotStarted"  # job_status of a file whose job could not be created
CONTENT_TYPE: Final = "application/json"

_OUTCOME: Final = ("input", "job_name", "job_status", "finished_at", "instance_type", "state", "output")
_SUCCEEDED_FIELDS: Final = (*_OUTCOME, "records", "record_errors")
_FAILED_FIELDS: Final = (*_OUTCOME, "reason")
_SKIPPED_FIELDS: Final = ("input", "revision", "state", "job_name", "reason")
_REFUSED_FIELDS: Final = (
    "input", "revision", "job_name", "job_status", "state", "output", "instance_type", "refused_instance_types",
    "reason",
)  # fmt: skip
_REJECTED_FIELDS: Final = ("input", "revision", "state", "job_status", "reason")
_GAVE_UP_FIELDS: Final = ("input", "revision", "job_name", "job_status", "state", "reason")
_DETAIL_FIELDS: Final = ("version_id", "current_version_id", "output_naming", "job_output")
_ALL_FIELDS: Final = (
    "input", "revision", "job_name", "job_status", "finished_at", "instance_type", "state", "output", "records",
    "record_errors", "refused_instance_types", "reason", *_DETAIL_FIELDS,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class OutcomeDetail:
    """What the job-outcome function adds to a file's record: which input version the job read and what it wrote."""

    version_id: str | None = None  # S3 VersionId of the input the job was started for (None: not known)
    current_version_id: str | None = None  # the input's version when the job ended (differs: Superseded)
    output_naming: str | None = None  # which of zstc_contract.layout.OUTPUT_NAMINGS SageMaker used
    job_output: str | None = None  # s3:// URI of the object SageMaker wrote in the job's own folder


@dataclass(frozen=True, kw_only=True)
class StatusRecord:
    input: str  # s3:// URI of the input file
    state: str  # SUCCEEDED | FAILED | SKIPPED
    job_name: str | None = None
    job_status: str | None = None  # the transform job's final state, or NOT_STARTED
    revision: str | None = None  # the object version (records the trigger writes)
    finished_at: str | None = None  # the job's end (time of its state-change event)
    instance_type: str | None = None
    output: str | None = None  # s3:// URI of the .out object on success
    records: int | None = None  # output lines (None: not counted)
    record_errors: int | None = None  # output lines that are errors
    refused_instance_types: tuple[str, ...] | None = None
    reason: str | None = None  # what went wrong and what to do (failures and skips)
    version_id: str | None = None  # OutcomeDetail's fields (records of the job-outcome function)
    current_version_id: str | None = None
    output_naming: str | None = None
    job_output: str | None = None
    fields: tuple[str, ...] = field(default=_ALL_FIELDS, repr=False, compare=False)  # the JSON keys, in order

    # --- the kinds of record (the one place each is shaped) -------------------------------------------------------

    @classmethod
    def succeeded(
        cls,
        *,
        input: str,
        output: str,
        job_name: str,
        job_status: str,
        finished_at: str | None,
        instance_type: str | None,
        records: int | None,
        record_errors: int | None,
        detail: OutcomeDetail | None = None,
    ) -> StatusRecord:
        return cls(
            input=input, state=SUCCEEDED, output=output, job_name=job_name, job_status=job_status,
            finished_at=finished_at, instance_type=instance_type, records=records, record_errors=record_errors,
            fields=_SUCCEEDED_FIELDS,
        ).with_detail(detail)  # fmt: skip

    @classmethod
    def job_failed(
        cls,
        *,
        input: str,
        job_name: str,
        job_status: str,
        finished_at: str | None,
        instance_type: str | None,
        reason: str,
        detail: OutcomeDetail | None = None,
    ) -> StatusRecord:
        return cls(
            input=input, state=FAILED, job_name=job_name, job_status=job_status, finished_at=finished_at,
            instance_type=instance_type, reason=reason, fields=_FAILED_FIELDS,
        ).with_detail(detail)  # fmt: skip

    def as_superseded(self) -> StatusRecord:
        """This failure record as ``Superseded``: the input was overwritten while the job read an older version."""
        return replace(self, state=SUPERSEDED)

    @classmethod
    def skipped(cls, *, input: str, revision: str, reason: str) -> StatusRecord:
        return cls(input=input, state=SKIPPED, revision=revision, reason=reason, fields=_SKIPPED_FIELDS)

    @classmethod
    def refused(
        cls, *, input: str, revision: str, job_name: str, refused_instance_types: Sequence[str], reason: str
    ) -> StatusRecord:
        return cls(
            input=input, state=FAILED, revision=revision, job_name=job_name, job_status=NOT_STARTED,
            refused_instance_types=tuple(refused_instance_types), reason=reason, fields=_REFUSED_FIELDS,
        )  # fmt: skip

    @classmethod
    def rejected(cls, *, input: str, revision: str, reason: str) -> StatusRecord:
        """The trigger refused the file before any job (a key too long for its derived keys, a suffix the model
        handler cannot read)."""
        return cls(
            input=input, state=FAILED, revision=revision, job_status=NOT_STARTED, reason=reason,
            fields=_REJECTED_FIELDS,
        )  # fmt: skip

    @classmethod
    def gave_up(cls, *, input: str, revision: str, job_name: str | None, reason: str) -> StatusRecord:
        """The trigger's last try before the dead-letter queue: the file's job could not be started in time."""
        return cls(
            input=input, state=FAILED, revision=revision, job_name=job_name, job_status=NOT_STARTED, reason=reason,
            fields=_GAVE_UP_FIELDS,
        )  # fmt: skip

    def with_detail(self, detail: OutcomeDetail | None) -> StatusRecord:
        """This record with the job-outcome function's detail (its fields after the kind's own); unchanged without."""
        if detail is None:
            return self
        return replace(
            self, version_id=detail.version_id, current_version_id=detail.current_version_id,
            output_naming=detail.output_naming, job_output=detail.job_output, fields=self.fields + _DETAIL_FIELDS,
        )  # fmt: skip

    # --- where it goes, the writer and the reader -----------------------------------------------------------------

    def key(self, *, output_prefix: str, errors_prefix: str, relative: str) -> str:
        """Next to the output on success, under the errors prefix otherwise."""
        return status_key(output_prefix if self.state == SUCCEEDED else errors_prefix, relative)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name in self.fields:
            value = getattr(self, name)
            body[name] = list(value) if isinstance(value, tuple) else value
        return body

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatusRecord:
        """The record in a decoded status object; fields it lacks are None, values of the wrong type too."""

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        def count(name: str) -> int | None:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        refused = data.get("refused_instance_types")
        return cls(
            input=text("input") or "",
            state=text("state") or "",
            job_name=text("job_name"),
            job_status=text("job_status"),
            revision=text("revision"),
            finished_at=text("finished_at"),
            instance_type=text("instance_type"),
            output=text("output"),
            records=count("records"),
            record_errors=count("record_errors"),
            refused_instance_types=tuple(map(str, refused)) if isinstance(refused, list) else None,
            reason=text("reason"),
            version_id=text("version_id"),
            current_version_id=text("current_version_id"),
            output_naming=text("output_naming"),
            job_output=text("job_output"),
            fields=tuple(name for name in data if name in _ALL_FIELDS),
        )

    @classmethod
    def decode(cls, body: bytes | str) -> StatusRecord:
        """The record in a status object's body; ValueError when it is not a JSON object."""
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError(f"a status record is a JSON object, not {type(data).__name__}")
        return cls.from_json(data)


def put_status_record(s3: Any, bucket: str, key: str, record: StatusRecord, **conditions: str) -> dict[str, Any]:
    """Write ``record`` with an S3 client (boto3's ``put_object``); ``conditions``: S3's conditional-write
    arguments (``IfMatch`` / ``IfNoneMatch``). Returns S3's answer (its ``ETag`` among others)."""
    answer: dict[str, Any] = s3.put_object(
        Bucket=bucket, Key=key, Body=record.encode(), ContentType=CONTENT_TYPE, **conditions
    )
    return answer
