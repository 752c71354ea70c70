"""The job-outcome function's work for one "SageMaker Transform Job State Change" event (clients injected).

For every input file of the job (read from its manifest): a status record (``output/<rel>.status.json`` when its
``.out`` exists, ``errors/<rel>.status.json`` with SageMaker's reason otherwise) and, when any file failed, one
notice on the SNS topic. Re-delivered events rewrite the same records: the function is idempotent.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from zstc_contract.jobs import COMPLETED, TERMINAL_JOB_STATES, is_stack_job
from zstc_contract.layout import input_key, output_key
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import OutcomeSettings
from zstc_contract.status import put_status_record
from zstc_contract.uri import split_uri

from .logic import FileOutcome, JobEvent, count_records, failure_notice, manifest_uri, status_record


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
        entries = decode_manifest(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()).entries

        outcomes = [self._file_outcome(relative) for relative in entries]
        for outcome in outcomes:
            status_key, record = status_record(self.settings, job, outcome)
            put_status_record(self.s3, self.settings.bucket, status_key, record)
            object_key = input_key(self.settings.input_prefix, outcome.relative)
            if outcome.succeeded:
                self.logger.info("File succeeded", extra={"object_key": object_key, "job_name": job.name})
            else:
                self.logger.warning(
                    "File failed",
                    extra={"object_key": object_key, "job_name": job.name, "reason": record.reason},
                )
        failed = [o for o in outcomes if not o.succeeded]
        self.metrics.add_metric(name="FilesSucceeded", unit="Count", value=len(outcomes) - len(failed))
        self.metrics.add_metric(name="FilesFailed", unit="Count", value=len(failed))
        records = sum(o.records or 0 for o in outcomes)
        record_errors = sum(o.record_errors or 0 for o in outcomes)
        self.metrics.add_metric(name="RecordsProcessed", unit="Count", value=records)
        self.metrics.add_metric(name="RecordErrors", unit="Count", value=record_errors)
        if job.status == COMPLETED and failed:
            self.metrics.add_metric(name="OutputsMissing", unit="Count", value=len(failed))
        if failed:
            self.sns.publish(
                TopicArn=self.settings.topic_arn, **failure_notice(self.settings, job, failed, len(outcomes))
            )
        self.logger.info(
            "Job outcome recorded",
            extra={
                "job_name": job.name,
                "job_status": job.status,
                "instance_type": job.instance_type,
                "files": len(outcomes),
                "files_failed": len(failed),
                "records": records,
                "record_errors": record_errors,
            },
        )
        return {"job_name": job.name, "files": len(outcomes), "files_failed": len(failed), "records": records}

    def _file_outcome(self, relative: str) -> FileOutcome:
        key = output_key(self.settings.output_prefix, relative)
        try:
            head = self.s3.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                # SageMaker uploads an object's output only when the whole object succeeded.
                return FileOutcome(relative, succeeded=False, output_found=False)
            raise
        size = int(head.get("ContentLength", 0))
        if size > self.settings.count_records_max_bytes:
            return FileOutcome(relative, succeeded=True, output_found=True)
        body = self.s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"]
        records, errors = count_records(body.iter_lines())
        return FileOutcome(relative, succeeded=True, output_found=True, records=records, record_errors=errors)


# The old name, until handler.py (rewritten by another change) imports OutcomeRecorder.
JobOutcome = OutcomeRecorder
