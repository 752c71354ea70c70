"""Records larger than a transform's payload limit, found before any job starts: each file read once, in bounded
memory (``zstc_contract.oversize``).

SageMaker fails a whole file when one of its records is larger than the job's ``MaxPayloadInMB``. The trigger reads
every file that could hold such a record (``needs_scan``: larger than 1 MB) once, streaming; when it holds any, the
same pass writes a copy in which each of them is a one-line rejection that the model handler answers with an error
record (``{"id", "error"}``): every line of the file still gets exactly one output line, in order, and the rest of the
file runs.

- What a read found is kept per object version (``manifests/_scans/<sha256>.json``, and the copy beside it): a
  retry, a duplicate event or a resumed job never reads the file again.
- A job with any re-staged file reads all its files from its own folder ``manifests/_staged/<job>/`` (a manifest
  has one prefix): the copies and the job's other files are copied there server-side (S3 to S3, no download).
- Reading is bounded by the invocation's remaining time: files not read in time wait for the next receive (their
  messages are deferred briefly, the reads done so far are kept); the other files go on.
- Files larger than :data:`MAX_SCAN_BYTES` are not read (more than an invocation's worth): their jobs are sized as
  if they held a record of the payload limit, and SageMaker fails such a file if one is larger (logged, metric
  ``FilesNotScanned``).
- Where the toolkit's stock handler serves (``model_source=hub``) there is no rejection it answers: a file with an
  oversized record gets a status record naming its lines instead of a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import ClientError

from zstc_contract.layout import relative_key, scan_copy_key, scan_key, staged_prefix
from zstc_contract.oversize import ScanResult, needs_scan, scan_and_stage
from zstc_contract.settings import TriggerSettings
from zstc_contract.sizing import record_limit_bytes

from .logic import S3Object

# Files larger than this are not read: at SCAN_READ_BYTES_PER_SECOND it is most of one invocation (120 s).
MAX_SCAN_BYTES: Final = 2 * 1024**3
# The rate the time budget assumes for one streaming GET from S3 into a 512 MB function. An assumption (no AWS
# account here to measure it): published Lambda figures are 50-90 MB/s per stream; the lower end is taken.
SCAN_READ_BYTES_PER_SECOND: Final = 50 * 10**6
# Seconds left to the invocation after reading: claims, server-side copies, manifest, the job, status records.
SCAN_RESERVE_SECONDS: Final = 45.0
SCAN_WORKERS: Final = 4
# How long a message waits whose files were not read in time (the reads done are kept: it goes on from there).
CONTINUE_SECONDS: Final = 5
STAGE_WORKERS: Final = 8
NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@dataclass
class Scans:
    """What the trigger knows of the records of an invocation's files (by claim id)."""

    results: dict[str, ScanResult] = field(default_factory=dict)  # files read, now or by an earlier attempt
    unscanned: set[str] = field(default_factory=set)  # too large to read
    waiting: list[S3Object] = field(default_factory=list)  # not read in time: their messages come back
    failed: dict[str, ClientError] = field(default_factory=dict)  # could not be read or recorded

    def largest_record(self, objects: Iterable[S3Object], limit_bytes: int) -> int:
        """The largest record (bytes, newline included) that runs in a job of ``objects``: a file not read counts
        as its size when that is below 1 MB (it holds no larger line), else as the payload limit."""
        largest = 0
        for obj in objects:
            result = self.results.get(obj.claim_id)
            if result is not None:
                largest = max(largest, result.largest_record)
            elif obj.claim_id in self.unscanned:
                largest = max(largest, limit_bytes)
            else:
                largest = max(largest, min(obj.size, limit_bytes))
        return largest

    def staged(self, objects: Iterable[S3Object]) -> bool:
        return any((r := self.results.get(o.claim_id)) is not None and r.staged_key for o in objects)


class Scanner:
    """Reads files for oversized records and stages jobs' files (see the module docstring)."""

    def __init__(
        self,
        settings: TriggerSettings,
        *,
        s3: Any,
        logger: Any,
        metrics: Any,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.logger = logger
        self.metrics = metrics
        self.remaining_seconds = remaining_seconds  # the invocation's time left (None: unbounded, in tests)

    @property
    def limit_bytes(self) -> int:
        return record_limit_bytes(self.settings.max_payload_mb)

    # --- reading -----------------------------------------------------------------------------------------------------

    def scan(self, objects: list[S3Object]) -> Scans:
        scans = Scans()
        pending = [o for o in objects if needs_scan(o.size)]
        for obj in pending:
            if obj.size > MAX_SCAN_BYTES:
                scans.unscanned.add(obj.claim_id)
                self.logger.warning(
                    "File too large to read for oversized records: a record over the payload limit fails it",
                    extra={"object_key": obj.key, "size": obj.size, "max_scan_bytes": MAX_SCAN_BYTES},
                )
                self.metrics.add_metric(name="FilesNotScanned", unit="Count", value=1)
        pending = [o for o in pending if o.claim_id not in scans.unscanned]
        if not pending:
            return scans
        with ThreadPoolExecutor(max_workers=min(SCAN_WORKERS, len(pending))) as pool:
            outcomes = list(pool.map(self._scan_one, pending))
        for obj, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, ScanResult):
                scans.results[obj.claim_id] = outcome
            elif isinstance(outcome, ClientError):
                scans.failed[obj.claim_id] = outcome
            else:
                scans.waiting.append(obj)
        if scans.waiting:
            self.metrics.add_metric(name="FilesScanContinued", unit="Count", value=len(scans.waiting))
        return scans

    def _scan_one(self, obj: S3Object) -> ScanResult | ClientError | None:
        """The object's scan (read now or recorded earlier); None when there is no time left to read it."""
        record = scan_key(self.settings.manifest_prefix, obj.claim_id)
        try:
            try:
                body = self.s3.get_object(Bucket=obj.bucket, Key=record)["Body"].read()
                known = ScanResult.decode(body)
                if self._copy_exists(known):
                    return known
                self.logger.warning("A scan record's copy has expired: the file is read again", extra={"key": record})
            except ClientError as error:
                if _code(error) not in NOT_FOUND:
                    raise
            except ValueError:
                self.logger.warning("A scan record is not one: the file is read again", extra={"key": record})
            if not self._has_time_for(obj.size):
                return None
            result = scan_and_stage(
                self.s3,
                bucket=obj.bucket,
                key=obj.key,
                version_id=obj.version_id,
                limit_bytes=self.limit_bytes,
                max_payload_mb=self.settings.max_payload_mb,
                staged_key=scan_copy_key(self.settings.manifest_prefix, obj.claim_id),
                field=self.settings.rejected_record_field or "",
            )
            self.s3.put_object(Bucket=obj.bucket, Key=record, Body=result.encode(), ContentType="application/json")
        except ClientError as error:
            self.logger.warning(
                "Could not read the file for oversized records", extra={"key": obj.key, "code": _code(error)}
            )
            return error
        self.metrics.add_metric(name="FilesScanned", unit="Count", value=1)
        if result.oversized_count:
            self.metrics.add_metric(name="RecordsOversized", unit="Count", value=result.oversized_count)
            self.logger.warning(
                "Records larger than the payload limit: each becomes an error record, the rest of the file runs",
                extra={
                    "object_key": obj.key,
                    "oversized_records": result.oversized_count,
                    "lines": [r.line for r in result.oversized[:20]],
                    "limit_bytes": result.limit_bytes,
                },
            )
        return result

    def _copy_exists(self, result: ScanResult) -> bool:
        """Whether a recorded read's copy is still there (the scratch folders expire; a re-driven message may come
        back later than that)."""
        if not result.staged_key:
            return True
        try:
            self.s3.head_object(Bucket=self.settings.bucket, Key=result.staged_key)
        except ClientError as error:
            if _code(error) in NOT_FOUND:
                return False
            raise
        return True

    def _has_time_for(self, size: int) -> bool:
        if self.remaining_seconds is None:
            return True
        return self.remaining_seconds() - size / SCAN_READ_BYTES_PER_SECOND > SCAN_RESERVE_SECONDS

    # --- staging -------------------------------------------------------------------------------------------------

    def stage(self, name: str, objects: list[S3Object], scans: Scans) -> str:
        """The key prefix job ``name``'s manifest names its files under: the input prefix, or (when any of them was
        re-staged) the job's own folder, into which every file of the job is copied server-side first."""
        if not scans.staged(objects):
            return self.settings.input_prefix
        folder = staged_prefix(self.settings.manifest_prefix, name)

        def copy(obj: S3Object) -> None:
            result = scans.results.get(obj.claim_id)
            source: dict[str, str] = {"Bucket": obj.bucket, "Key": obj.key}
            if result is not None and result.staged_key:
                source["Key"] = result.staged_key
            elif obj.version_id is not None:
                source["VersionId"] = obj.version_id
            target = folder + relative_key(obj.key, self.settings.input_prefix)
            self.s3.copy(source, self.settings.bucket, target)

        with ThreadPoolExecutor(max_workers=min(STAGE_WORKERS, len(objects))) as pool:
            list(pool.map(copy, objects))  # the first error propagates: the job's messages come back
        self.metrics.add_metric(name="JobsStaged", unit="Count", value=1)
        self.logger.info("Job reads re-staged files", extra={"job_name": name, "files": len(objects), "folder": folder})
        return folder


def oversized_reason(result: ScanResult, max_payload_mb: int) -> str:
    """The status reason of a file refused for its oversized records (the stock handler has no rejection)."""
    lines = ", ".join(str(r.line) for r in result.oversized[:10])
    more = f" and {result.oversized_count - 10} more" if result.oversized_count > 10 else ""
    return (
        f"{result.oversized_count} record(s) (line {lines}{more}) are larger than the transform's payload limit of "
        f"{result.limit_bytes:,} bytes (MaxPayloadInMB {max_payload_mb}), which fails the whole file; the stock "
        "handler (model_source=hub) cannot answer them one by one. Split their texts over several records (one text "
        "per line), raise batch_max_payload_mb (at most 100), or deploy with our handler."
    )
