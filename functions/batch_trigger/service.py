"""The batch trigger's work for one Lambda batch of SQS messages: claim, coalesce, start transform jobs.

AWS clients are injected (the handler passes real ones; tests pass moto / Stubber-backed ones). The order of the
writes is what makes the path crash-safe:

1. claim each new object version with a conditional put (``attribute_not_exists``) naming the job J that the group
   will become (J is derived from the group's object versions);
2. write the manifest ``manifests/J.json`` listing exactly the versions claimed for J;
3. create J (a "name already in use" answer counts as success); then mark the claims STARTED.

J is created on the first configured instance type whose quota can hold it: when SageMaker answers that the
account's quota for that type is smaller than the job needs, the same request goes to the next type, and the
refusal is remembered in the claims table (a row with a TTL) so that later files skip the type meanwhile. When every
type is refused, each file gets a status record under ``errors/`` that names the quotas.

A crash or deferral anywhere leaves claims that a later attempt can finish: a claim whose job's manifest lists it
is *resumed* (J is created from that manifest; creation is idempotent); a claim whose manifest does not exist or
does not list it is *adopted* into the current attempt's job. Duplicates of claims held by a live invocation are
dropped: the message that made the claim is still in flight and either finishes or comes back to the queue.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from zstc_contract.backoff import backoff_seconds
from zstc_contract.jobs import IN_PROGRESS, is_stack_job, job_name
from zstc_contract.layout import relative_key, status_key
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import Target, TriggerSettings
from zstc_contract.status import StatusRecord, put_status_record
from zstc_contract.uri import s3_uri

from .logic import (
    CLAIMED,
    EMPTY,
    GAVE_UP,
    INSTANCE_REFUSED_MESSAGE,
    JOB_STARTED_MESSAGE,
    OVERSIZED,
    RECORD_TOO_SLOW_MESSAGE,
    STARTED,
    Claim,
    QuotaAnswer,
    S3Object,
    claim_decision,
    gave_up_reason,
    group_objects,
    instance_quota_answer,
    is_deferrable,
    is_last_receive,
    is_name_taken,
    job_batching,
    manifest_body,
    manifest_key,
    parse_message,
    refusal,
    refusal_notice,
    refusal_pk,
    refusal_reason,
    transform_request,
    try_order,
    versions_sidecar,
)
from .sampling import read_heads, samples_of
from .staging import CONTINUE_SECONDS, Scanner, Scans, oversized_reason


class Deferred(Exception):
    """The message's work waits for a free job slot or the end of throttling; it goes back to the queue."""

    def __init__(self, reason: str, visibility_seconds: int) -> None:
        super().__init__(reason)
        self.visibility_seconds = visibility_seconds


class WorkFailed(Exception):
    """The message's work failed for a reason that is not a quota; it goes back to the queue (then the DLQ)."""


@dataclass
class Message:
    message_id: str
    receipt_handle: str
    receive_count: int
    body: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Message:
        attributes = record.get("attributes") or {}
        return cls(
            message_id=str(record["messageId"]),
            receipt_handle=str(record.get("receiptHandle", "")),
            receive_count=int(attributes.get("ApproximateReceiveCount", "1") or 1),
            body=str(record.get("body", "")),
        )


@dataclass
class BatchResult:
    """Per-message outcome: absent = done; a ``Deferred`` or ``WorkFailed`` = back to the queue."""

    failures: dict[str, Exception] = field(default_factory=dict)
    jobs_started: list[str] = field(default_factory=list)

    def fail(self, message_ids: Iterable[str], error: Exception) -> None:
        for message_id in message_ids:
            # A deferral wins over a plain failure: its backoff is the better retry schedule.
            if message_id not in self.failures or isinstance(error, Deferred):
                self.failures[message_id] = error


HEAD_WORKERS = 16  # parallel HeadObject calls: 1,000 files (the largest batch) in a few seconds
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion", "405", "MethodNotAllowed"})


def _error_code(error: ClientError) -> tuple[str, str]:
    info = error.response.get("Error", {})
    return str(info.get("Code", "")), str(info.get("Message", ""))


class BatchTrigger:
    """Turns one batch of S3-event messages into transform jobs. One instance per Lambda container."""

    def __init__(
        self,
        settings: TriggerSettings,
        *,
        s3: Any,
        dynamodb: Any,
        sagemaker: Any,
        logger: Any,
        metrics: Any,
        clock: Callable[[], float] = time.time,
        sns: Any = None,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.dynamodb = dynamodb
        self.sagemaker = sagemaker
        self.sns = sns  # notices of refused and given-up files (settings.topic_arn); None: logged only
        self.logger = logger
        self.metrics = metrics
        self.clock = clock
        # Reads files for records over the payload limit, within the invocation's time (None: unbounded).
        self.scanner = Scanner(settings, s3=s3, logger=logger, metrics=metrics, remaining_seconds=remaining_seconds)

    # --- entry point ---------------------------------------------------------------------------------------------

    def process(self, messages: list[Message]) -> BatchResult:
        result = BatchResult()
        now = int(self.clock())
        owners: dict[str, list[Message]] = defaultdict(list)  # claim id -> messages naming it
        named: dict[str, S3Object] = {}
        for message in messages:
            for obj in self._parse(message):
                owners[obj.claim_id].append(message)
                named[obj.claim_id] = obj
        notices: dict[str, list[tuple[str, str]]] = defaultdict(list)
        objects = self._admit(named, owners, result, notices)
        scans = self.scanner.scan(objects)
        objects = self._admit_scanned(objects, scans, owners, result, notices)
        if objects:
            ctx = _Attempt(owners=owners, now=now, running=None, scans=scans)
            groups = group_objects(
                objects, window_seconds=self.settings.window_seconds, max_files=self.settings.max_files_per_job
            )
            for group in groups:
                self._process_group(group, ctx, result)
        self._give_up_last_tries(list(named.values()), owners, result, notices)
        self._notify(notices)
        return result

    # --- parsing ---------------------------------------------------------------------------------------------------

    def _parse(self, message: Message) -> list[S3Object]:
        parsed = parse_message(message.body, self.settings)
        for ignored in parsed.ignored:
            self.logger.info(
                "Ignored S3 event",
                extra={"object_key": ignored.key, "reason": ignored.reason, "message_id": message.message_id},
            )
            self.metrics.add_metric(name="FilesIgnored", unit="Count", value=1)
        if parsed.objects:
            self.metrics.add_metric(name="FilesReceived", unit="Count", value=len(parsed.objects))
        return parsed.objects

    # --- confirming and admitting files ------------------------------------------------------------------------------

    def _admit(
        self,
        named: dict[str, S3Object],
        owners: dict[str, list[Message]],
        result: BatchResult,
        notices: dict[str, list[tuple[str, str]]],
    ) -> list[S3Object]:
        """The confirmed files that are work. S3 confirms each named version first (the event's size and version
        are only what the body claims): a file deleted since is skipped, an empty one, one the handler cannot read
        and one whose derived keys would be too long get a status record instead of a job."""
        work: list[S3Object] = []
        for claim_id, confirmed in self._confirm(list(named.values())).items():
            obj = named[claim_id]
            message_ids = [m.message_id for m in owners[claim_id]]
            if isinstance(confirmed, ClientError):
                result.fail(message_ids, WorkFailed(f"HeadObject of {obj.key}: {_error_code(confirmed)[0]}"))
                continue
            if confirmed is None:
                self.logger.info("Object no longer exists (deleted since its event): skipped", extra=_log(obj))
                self.metrics.add_metric(name="FilesMissing", unit="Count", value=1)
                continue
            refused = refusal(confirmed, self.settings)
            try:
                if refused is not None:
                    record = StatusRecord.rejected(
                        input=s3_uri(obj.bucket, obj.key), revision=obj.revision, reason=refused.reason
                    )
                    put_status_record(self.s3, obj.bucket, refused.status_key, record)
                    self.logger.warning(
                        "File refused; status record written",
                        extra=_log(obj, kind=refused.kind, key=refused.status_key),
                    )
                    self.metrics.add_metric(name="FilesRefused", unit="Count", value=1)
                    notices[refused.kind].append((record.input, refused.reason))
                elif confirmed.size == 0:
                    self._write_empty_status(confirmed)
                else:
                    work.append(confirmed)
            except ClientError as error:
                self.logger.exception("Could not write the status record", extra=_log(obj))
                result.fail(message_ids, WorkFailed(f"status record for {obj.key}: {_error_code(error)[0]}"))
        return work

    def _admit_scanned(
        self,
        objects: list[S3Object],
        scans: Scans,
        owners: dict[str, list[Message]],
        result: BatchResult,
        notices: dict[str, list[tuple[str, str]]],
    ) -> list[S3Object]:
        """The files whose records are known now: one not read in time comes back soon (the reads done are kept),
        one that could not be read comes back as a failure; with the stock handler, which cannot answer a rejected
        record, a file holding one gets a status record instead of a job (it would fail whole in SageMaker)."""
        for obj in scans.waiting:
            reason = "reading the job's files for records over the payload limit: continued on the next receive"
            result.fail([m.message_id for m in owners[obj.claim_id]], Deferred(reason, CONTINUE_SECONDS))
        for claim_id, error in scans.failed.items():
            obj = next(o for o in objects if o.claim_id == claim_id)
            failure = WorkFailed(f"reading {obj.key} for oversized records: {_error_code(error)[0]}")
            result.fail([m.message_id for m in owners[claim_id]], failure)
        work: list[S3Object] = []
        for obj in objects:
            scan = scans.results.get(obj.claim_id)
            if obj.claim_id in scans.failed or obj in scans.waiting:
                continue
            if scan is None or not scan.oversized_count or self.settings.rejected_record_field:
                work.append(obj)
                continue
            reason = oversized_reason(scan, self.settings.max_payload_mb)
            record = StatusRecord.rejected(input=s3_uri(obj.bucket, obj.key), revision=obj.revision, reason=reason)
            key = status_key(self.settings.errors_prefix, relative_key(obj.key, self.settings.input_prefix))
            try:
                put_status_record(self.s3, obj.bucket, key, record)
            except ClientError as error:
                self.logger.exception("Could not write the status record", extra=_log(obj))
                result.fail(
                    [m.message_id for m in owners[obj.claim_id]],
                    WorkFailed(f"status record for {obj.key}: {_error_code(error)[0]}"),
                )
                continue
            self.logger.warning("File refused: records over the payload limit", extra=_log(obj, key=key))
            self.metrics.add_metric(name="FilesRefused", unit="Count", value=1)
            notices[OVERSIZED].append((record.input, reason))
        return work

    def _confirm(self, objects: list[S3Object]) -> dict[str, S3Object | ClientError | None]:
        """Per claim id: the object with S3's size (None: no such object or version), or the HeadObject error."""

        def head(obj: S3Object) -> S3Object | ClientError | None:
            request: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
            if obj.version_id is not None:
                request["VersionId"] = obj.version_id
            try:
                answer = self.s3.head_object(**request)
            except ClientError as error:
                code = _error_code(error)[0]
                status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if code in MISSING_CODES or status in ("404", "405"):
                    return None
                self.logger.warning("Could not confirm the object", extra=_log(obj, error_code=code))
                return error
            if answer.get("DeleteMarker"):
                return None
            return S3Object(bucket=obj.bucket, key=obj.key, revision=obj.revision, size=int(answer["ContentLength"]))

        if len(objects) <= 1:
            return {o.claim_id: head(o) for o in objects}
        with ThreadPoolExecutor(max_workers=min(HEAD_WORKERS, len(objects))) as pool:
            return {o.claim_id: answer for o, answer in zip(objects, pool.map(head, objects), strict=True)}

    def _write_empty_status(self, obj: S3Object) -> None:
        record = StatusRecord.skipped(
            input=s3_uri(obj.bucket, obj.key),
            revision=obj.revision,
            reason="The object is empty (0 bytes): there is nothing to classify. Upload a JSON Lines file with "
            "one request per line.",
        )
        relative = relative_key(obj.key, self.settings.input_prefix)
        put_status_record(self.s3, obj.bucket, status_key(self.settings.errors_prefix, relative), record)
        self.logger.info("Empty object skipped; status record written", extra=_log(obj, kind=EMPTY))
        self.metrics.add_metric(name="FilesEmpty", unit="Count", value=1)

    # --- the last try before the dead-letter queue, and notices ------------------------------------------------------

    def _give_up_last_tries(
        self,
        objects: list[S3Object],
        owners: dict[str, list[Message]],
        result: BatchResult,
        notices: dict[str, list[tuple[str, str]]],
    ) -> None:
        """Files whose message goes back to the queue on its last receive (it moves to the dead-letter queue next):
        a status record each, saying so and why, and a notice; the message still fails (the DLQ keeps it for a
        re-drive)."""
        for obj in objects:
            last = [
                (m, failure)
                for m in owners[obj.claim_id]
                if (failure := result.failures.get(m.message_id)) is not None
                and is_last_receive(m.receive_count, self.settings)
            ]
            if not last:
                continue
            message, failure = last[0]
            reason = gave_up_reason(message.receive_count, self.settings, str(failure))
            record = StatusRecord.gave_up(
                input=s3_uri(obj.bucket, obj.key), revision=obj.revision, job_name=None, reason=reason
            )
            key = status_key(self.settings.errors_prefix, relative_key(obj.key, self.settings.input_prefix))
            try:
                put_status_record(self.s3, obj.bucket, key, record)
            except ClientError:
                self.logger.exception("Could not write the status record of a file given up", extra=_log(obj))
                continue
            self.logger.error(
                "File given up: its message moves to the dead-letter queue", extra=_log(obj, reason=reason)
            )
            self.metrics.add_metric(name="FilesGivenUp", unit="Count", value=1)
            notices[GAVE_UP].append((record.input, reason))

    def _notify(self, notices: Mapping[str, list[tuple[str, str]]]) -> None:
        """One notice per kind on the failure topic. Not fatal: the status records are the files' result."""
        for kind, files in notices.items():
            if not files:
                continue
            if self.sns is None or not self.settings.topic_arn:
                self.logger.warning("No failure topic: notice not sent", extra={"kind": kind, "files": len(files)})
                continue
            try:
                self.sns.publish(TopicArn=self.settings.topic_arn, **refusal_notice(self.settings, kind, files))
            except ClientError:
                self.logger.exception("Could not publish the notice", extra={"kind": kind, "files": len(files)})

    # --- one group → (at most) one new job -------------------------------------------------------------------------

    def _process_group(self, group: list[S3Object], ctx: _Attempt, result: BatchResult) -> None:
        resumes: dict[str, list[S3Object]] = defaultdict(list)
        try:
            fresh = self._plan_group(group, ctx, result, resumes)
        except ClientError as error:
            self.logger.exception("Could not plan the transform job of a group", extra={"files": len(group)})
            result.fail(_message_ids(group, ctx), WorkFailed(f"planning: {_error_code(error)[0]}"))
            return
        for name, objects in resumes.items():  # older work first
            self._ensure_job(name, objects, ctx, result, fresh=False)
        if fresh is not None:
            self._ensure_job(fresh[0], fresh[1], ctx, result, fresh=True)

    def _plan_group(
        self, group: list[S3Object], ctx: _Attempt, result: BatchResult, resumes: dict[str, list[S3Object]]
    ) -> tuple[str, list[S3Object]] | None:
        """Claim the group's new versions for one job and write its manifest; collect claims to resume."""
        remaining = list(group)
        generation = 0
        while remaining:
            name = job_name(self.settings.job_name_prefix, group, generation)
            listed = self._read_manifest(name)
            if listed is None:
                return self._claim_group(name, remaining, ctx, result, resumes)
            # A retry of the same group found its manifest: the versions it lists belong to that job (resume it);
            # any other version of the group (its claim failed back then) goes to the next generation's job.
            mine = [o for o in remaining if relative_key(o.key, self.settings.input_prefix) in listed]
            resumes[name].extend(mine)
            remaining = [o for o in remaining if o not in mine]
            generation += 1
        return None

    def _claim_group(
        self,
        name: str,
        objects: list[S3Object],
        ctx: _Attempt,
        result: BatchResult,
        resumes: dict[str, list[S3Object]],
    ) -> tuple[str, list[S3Object]] | None:
        claimed: list[S3Object] = []
        for obj in objects:
            message_ids = [m.message_id for m in ctx.owners[obj.claim_id]]
            try:
                if self._claim_one(obj, name, message_ids, ctx, resumes):
                    claimed.append(obj)
            except ClientError as error:
                self.logger.exception("Could not claim the object", extra=_log(obj, name))
                result.fail(message_ids, WorkFailed(f"claim of {obj.key}: {_error_code(error)[0]}"))
        if not claimed:
            return None
        try:
            # Files re-staged without their oversized records: the job reads its files from its own folder.
            prefix = self.scanner.stage(name, claimed, ctx.scans)
            # The versions sidecar first: a job whose manifest exists always has it (the manifest marks resumes).
            sidecar_key, sidecar = versions_sidecar(self.settings, name, claimed)
            self.s3.put_object(
                Bucket=self.settings.bucket, Key=sidecar_key, Body=sidecar, ContentType="application/json"
            )
            self.s3.put_object(
                Bucket=self.settings.bucket,
                Key=manifest_key(self.settings, name),
                Body=manifest_body(self.settings, claimed, prefix),
                ContentType="application/json",
            )
        except ClientError as error:
            self.logger.exception("Could not write the manifest", extra={"job_name": name})
            result.fail(_message_ids(claimed, ctx), WorkFailed(f"manifest of {name}: {_error_code(error)[0]}"))
            return None
        return name, claimed

    def _claim_one(
        self, obj: S3Object, name: str, message_ids: list[str], ctx: _Attempt, resumes: dict[str, list[S3Object]]
    ) -> bool:
        """True when ``obj`` now belongs to job ``name``; otherwise it is a duplicate or joins ``resumes``."""
        existing = self._put_claim(obj, name, message_ids[0], ctx.now)
        if existing is None:
            return True
        decision = claim_decision(
            existing, message_ids=message_ids, now=ctx.now, grace_seconds=self.settings.claim_grace_seconds
        )
        if decision == "duplicate":
            self.logger.info(
                "Duplicate event: the object version is already claimed",
                extra=_log(obj, existing.job_name, claim_state=existing.state),
            )
            self.metrics.add_metric(name="FilesDuplicate", unit="Count", value=1)
            return False
        if existing.job_name == name:  # our own earlier attempt at this very job, before its manifest existed
            return True
        listed = self._read_manifest(existing.job_name)
        if listed is not None and relative_key(obj.key, self.settings.input_prefix) in listed:
            self.logger.info("Resuming the claimed object's job", extra=_log(obj, existing.job_name))
            resumes[existing.job_name].append(obj)
            return False
        if self._adopt_claim(obj, existing, name, message_ids[0], ctx.now):
            self.logger.info("Adopted an unfinished claim", extra=_log(obj, name, previous_job_name=existing.job_name))
            self.metrics.add_metric(name="ClaimsRecovered", unit="Count", value=1)
            return True
        self.metrics.add_metric(name="FilesDuplicate", unit="Count", value=1)  # adopted by someone else meanwhile
        return False

    # --- claims table ------------------------------------------------------------------------------------------------

    def _put_claim(self, obj: S3Object, name: str, owner: str, now: int) -> Claim | None:
        """Claim ``obj`` for job ``name``; None on success, else the existing claim."""
        try:
            self.dynamodb.put_item(
                TableName=self.settings.claims_table,
                Item={
                    "pk": {"S": obj.claim_id},
                    "job_name": {"S": name},
                    "state": {"S": CLAIMED},
                    "owner": {"S": owner},
                    "claimed_at": {"N": str(now)},
                    "object_key": {"S": obj.key},
                    "expires_at": {"N": str(now + self.settings.claim_ttl_seconds)},
                },
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as error:
            if _error_code(error)[0] != "ConditionalCheckFailedException":
                raise
            item = error.response.get("Item")
            if item is None:  # older APIs/emulators do not return the item: read it
                item = self.dynamodb.get_item(
                    TableName=self.settings.claims_table, Key={"pk": {"S": obj.claim_id}}, ConsistentRead=True
                ).get("Item", {})
            return Claim.from_item(item)

    def _adopt_claim(self, obj: S3Object, existing: Claim, name: str, owner: str, now: int) -> bool:
        try:
            self.dynamodb.update_item(
                TableName=self.settings.claims_table,
                Key={"pk": {"S": obj.claim_id}},
                UpdateExpression="SET job_name = :new, #owner = :owner, claimed_at = :now",
                ConditionExpression="job_name = :old AND #state = :claimed",
                ExpressionAttributeNames={"#owner": "owner", "#state": "state"},
                ExpressionAttributeValues={
                    ":new": {"S": name},
                    ":old": {"S": existing.job_name},
                    ":owner": {"S": owner},
                    ":now": {"N": str(now)},
                    ":claimed": {"S": CLAIMED},
                },
            )
            return True
        except ClientError as error:
            if _error_code(error)[0] == "ConditionalCheckFailedException":
                return False
            raise

    def _mark_started(self, name: str, objects: list[S3Object]) -> None:
        for obj in objects:
            try:
                self.dynamodb.update_item(
                    TableName=self.settings.claims_table,
                    Key={"pk": {"S": obj.claim_id}},
                    UpdateExpression="SET #state = :started",
                    ConditionExpression="job_name = :job",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={":started": {"S": STARTED}, ":job": {"S": name}},
                )
            except ClientError:
                # Not fatal: a CLAIMED row whose manifest lists it is resumed idempotently later.
                self.logger.warning("Could not mark the claim started", extra=_log(obj, name))

    # --- manifests and jobs ---------------------------------------------------------------------------------------

    def _read_manifest(self, name: str) -> set[str] | None:
        """Relative keys listed by job ``name``'s manifest, or None if it has none."""
        try:
            body = self.s3.get_object(Bucket=self.settings.bucket, Key=manifest_key(self.settings, name))["Body"]
        except ClientError as error:
            if _error_code(error)[0] in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return set(decode_manifest(body.read()).entries)

    def _ensure_job(self, name: str, objects: list[S3Object], ctx: _Attempt, result: BatchResult, *, fresh: bool):
        """Make sure job ``name`` exists; defer the objects' messages when no slot or quota is free."""
        message_ids = _message_ids(objects, ctx)
        try:
            if name in ctx.started or (not fresh and self._job_exists(name)):
                self._mark_started(name, objects)
                return
            if ctx.running is None:
                ctx.running = self._count_running_jobs()
            if ctx.running >= self.settings.max_concurrent_jobs:
                self._defer(
                    name,
                    objects,
                    ctx,
                    result,
                    f"{ctx.running} jobs running, the limit is {self.settings.max_concurrent_jobs}",
                )
                return
            manifest_uri = s3_uri(self.settings.bucket, manifest_key(self.settings, name))
            files = self._manifest_size(name) if not fresh else len(objects)
            if not self._start_job(name, manifest_uri, files, objects, ctx, result):
                return
            ctx.started.add(name)
            self._mark_started(name, objects)
            for obj in objects:
                self.logger.info("Object covered by transform job", extra=_log(obj, name))
        except ClientError as error:
            code, text = _error_code(error)
            if is_deferrable(code):
                self._defer(name, objects, ctx, result, f"{code}: {text}")
                return
            self.logger.exception("Could not start the transform job", extra={"job_name": name, "error_code": code})
            result.fail(message_ids, WorkFailed(f"{name}: {code}: {text}"))

    def _start_job(
        self, name: str, manifest_uri: str, files: int, objects: list[S3Object], ctx: _Attempt, result: BatchResult
    ) -> bool:
        """Create job ``name`` on the first instance type whose quota can hold it; True once the job exists.

        A quota too small for the job moves it to the next type; any other error (the concurrent-job limit, a quota
        that is only in use right now, throttling) propagates to the caller, which defers or fails as before.
        """
        refused = self._refused_types(ctx)
        answers: list[QuotaAnswer] = []
        heads = read_heads(self.s3, objects, self.logger)  # once per job: the targets differ only in their rates
        largest = ctx.scans.largest_record(objects, self.scanner.limit_bytes)
        for target in try_order(self.settings.targets, refused):
            samples = samples_of(heads, tokens_per_pair=target.tokens_per_pair)
            batching = job_batching(self.settings, target, samples, largest_record_bytes=largest)
            request = transform_request(self.settings, name, manifest_uri, files, target, batching)
            try:
                self.sagemaker.create_transform_job(**request)
            except ClientError as error:
                code, text = _error_code(error)
                if is_name_taken(code, text):
                    self.logger.info("Transform job already exists", extra={"job_name": name})
                    return True
                answer = instance_quota_answer(code, text, target.instance_type)
                if answer is None or not answer.too_small:
                    raise
                answers.append(answer)
                self._remember_refusal(answer, ctx)
                continue
            ctx.running = (ctx.running or 0) + 1
            result.jobs_started.append(name)
            self.metrics.add_metric(name="JobsStarted", unit="Count", value=1)
            if answers:
                self.metrics.add_metric(name="JobsMovedToAnotherInstanceType", unit="Count", value=1)
            self.logger.info(
                JOB_STARTED_MESSAGE,
                extra={
                    "job_name": name,
                    "files": files,
                    "instance_type": target.instance_type,
                    "model_name": target.model_name,
                    "batch_strategy": batching.strategy,
                    "max_payload_mb": batching.max_payload_mb,
                    "expected_invocation_seconds": batching.expected_seconds,
                    "batching_reason": batching.reason,
                    "refused_instance_types": [a.instance_type for a in answers],
                    "skipped_instance_types": sorted(set(refused) - {a.instance_type for a in answers}),
                },
            )
            if batching.warning:
                self.metrics.add_metric(name="RecordsTooSlowForTimeout", unit="Count", value=1)
                self.logger.warning(RECORD_TOO_SLOW_MESSAGE, extra={"job_name": name, "warning": batching.warning})
            if target.instance_type in refused:  # the quota was raised: later files may use the type again
                self._forget_refusal(target)
            return True
        self._fail_refused(name, objects, answers, ctx, result)
        return False

    # --- remembered quota refusals (rows of the claims table with a TTL) -----------------------------------------

    def _refused_types(self, ctx: _Attempt) -> set[str]:
        if ctx.refused is None:
            ctx.refused = set()
            if len(self.settings.targets) > 1:  # with one type there is nothing to skip to
                for target in self.settings.targets:
                    try:
                        item = self.dynamodb.get_item(
                            TableName=self.settings.claims_table, Key={"pk": {"S": refusal_pk(target.instance_type)}}
                        ).get("Item")
                    except ClientError:
                        self.logger.warning(
                            "Could not read a remembered quota refusal", extra={"instance_type": target.instance_type}
                        )
                        continue
                    # DynamoDB deletes expired rows lazily (up to days later): the expiry is checked here.
                    if item and int(item.get("expires_at", {}).get("N", "0")) > ctx.now:
                        ctx.refused.add(target.instance_type)
        return ctx.refused

    def _remember_refusal(self, answer: QuotaAnswer, ctx: _Attempt) -> None:
        self.logger.warning(
            INSTANCE_REFUSED_MESSAGE,
            extra={
                "instance_type": answer.instance_type,
                "quota_name": answer.quota_name,
                "quota": answer.limit,
                "quota_used": answer.used,
                "instances_needed": answer.needed,
            },
        )
        self.metrics.add_metric(name="InstanceTypeRefusals", unit="Count", value=1)
        if ctx.refused is not None:
            ctx.refused.add(answer.instance_type)
        try:
            self.dynamodb.put_item(
                TableName=self.settings.claims_table,
                Item={
                    "pk": {"S": refusal_pk(answer.instance_type)},
                    "instance_type": {"S": answer.instance_type},
                    "quota_name": {"S": answer.quota_name},
                    "refused_at": {"N": str(ctx.now)},
                    "expires_at": {"N": str(ctx.now + self.settings.refusal_ttl_seconds)},
                },
            )
        except ClientError:
            self.logger.warning("Could not remember the quota refusal", extra={"instance_type": answer.instance_type})

    def _forget_refusal(self, target: Target) -> None:
        try:
            self.dynamodb.delete_item(
                TableName=self.settings.claims_table, Key={"pk": {"S": refusal_pk(target.instance_type)}}
            )
        except ClientError:
            self.logger.warning("Could not forget the quota refusal", extra={"instance_type": target.instance_type})

    def _fail_refused(
        self, name: str, objects: list[S3Object], answers: list[QuotaAnswer], ctx: _Attempt, result: BatchResult
    ) -> None:
        """Every instance type was refused by its quota: a status record per file says so (the message is done)."""
        reason = refusal_reason(answers, self.settings.instance_count)
        self.metrics.add_metric(name="JobsRefused", unit="Count", value=1)
        self.logger.error(
            "No instance type has quota for the transform job",
            extra={
                "job_name": name,
                "files": len(objects),
                "refused_instance_types": [a.instance_type for a in answers],
            },
        )
        for obj in objects:
            record = StatusRecord.refused(
                input=s3_uri(obj.bucket, obj.key),
                revision=obj.revision,
                job_name=name,
                refused_instance_types=[a.instance_type for a in answers],
                reason=reason,
            )
            key = status_key(self.settings.errors_prefix, relative_key(obj.key, self.settings.input_prefix))
            try:
                put_status_record(self.s3, self.settings.bucket, key, record)
            except ClientError as error:
                self.logger.exception("Could not write the status record", extra=_log(obj, name))
                result.fail(
                    [m.message_id for m in ctx.owners[obj.claim_id]],
                    WorkFailed(f"status record for {obj.key}: {_error_code(error)[0]}"),
                )

    def _defer(self, name: str, objects: list[S3Object], ctx: _Attempt, result: BatchResult, reason: str) -> None:
        self.metrics.add_metric(name="JobsDeferred", unit="Count", value=1)
        self.metrics.add_metric(name="FilesDeferred", unit="Count", value=len(objects))
        for obj in objects:
            for message in ctx.owners[obj.claim_id]:
                delay = backoff_seconds(
                    message.receive_count,
                    base=self.settings.backoff_base_seconds,
                    maximum=self.settings.backoff_max_seconds,
                )
                result.fail([message.message_id], Deferred(reason, delay))
            self.logger.warning("Transform job deferred", extra=_log(obj, name, reason=reason))

    def _job_exists(self, name: str) -> bool:
        try:
            self.sagemaker.describe_transform_job(TransformJobName=name)
            return True
        except ClientError as error:
            code, text = _error_code(error)
            if code in ("ResourceNotFound", "ResourceNotFoundException") or (
                code == "ValidationException" and any(w in text.lower() for w in ("could not find", "not found"))
            ):
                return False
            raise

    def _manifest_size(self, name: str) -> int:
        listed = self._read_manifest(name)
        return len(listed) if listed is not None else 0

    def _count_running_jobs(self) -> int:
        prefix = self.settings.job_name_prefix
        count = 0
        paginator = self.sagemaker.get_paginator("list_transform_jobs")
        for page in paginator.paginate(StatusEquals=IN_PROGRESS, NameContains=prefix):
            count += sum(
                1 for job in page.get("TransformJobSummaries", []) if is_stack_job(job["TransformJobName"], prefix)
            )
        return count


@dataclass
class _Attempt:
    owners: dict[str, list[Message]]
    now: int
    running: int | None
    started: set[str] = field(default_factory=set)
    refused: set[str] | None = None  # instance types remembered as refused (read once per invocation)
    scans: Scans = field(default_factory=Scans)  # what the invocation's files hold (staging.Scanner)


def _message_ids(objects: Iterable[S3Object], ctx: _Attempt) -> list[str]:
    return sorted({m.message_id for o in objects for m in ctx.owners.get(o.claim_id, [])})


def _log(obj: S3Object, name: str | None = None, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"object_key": obj.key, "object_revision": obj.revision}
    if name:
        fields["job_name"] = name
    fields.update(extra)
    return fields


def delay_deferred(sqs: Any, queue_url: str, messages: list[Message], result: BatchResult, logger: Any) -> None:
    """Give each deferred message its backoff: it stays invisible in the queue that long before the next try.

    Failures here are logged, not raised: the message then simply comes back after the queue's visibility timeout.
    """
    entries = [
        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": failure.visibility_seconds}
        for i, m in enumerate(messages)
        if isinstance(failure := result.failures.get(m.message_id), Deferred) and m.receipt_handle
    ]
    for start in range(0, len(entries), 10):
        chunk = entries[start : start + 10]
        try:
            answer = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=chunk)
        except ClientError:
            logger.exception("Could not delay deferred messages", extra={"messages": len(chunk)})
            continue
        for failed in answer.get("Failed", []):
            logger.warning("Could not delay a deferred message", extra={"entry": failed})
