"""Pure logic of the batch trigger: no AWS calls, no clock, no randomness.

Everything here is a function of its arguments, so the unit tests exercise it without moto or stubs:
S3 event parsing (URL-decoded keys, noise), grouping, the manifest, the ``CreateTransformJob`` request, quota answers
and claim decisions. The settings, job names, key names and the backoff are the contract's (``zstc_contract``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

from zstc_contract.backoff import backoff_seconds
from zstc_contract.jobs import DIGEST_CHARS
from zstc_contract.jobs import JOB_PREFIX as JOB_PREFIX  # re-exported: tests read it here
from zstc_contract.jobs import job_name as job_name  # re-exported: tests derive names the trigger's way
from zstc_contract.layout import (
    GZIP_INPUT_SUFFIX,
    INPUT_SUFFIX,
    MAX_KEY_BYTES,
    STATUS_SUFFIX,
    derived_keys,
    job_output_prefix,
    key_bytes,
    long_key_status_key,
    relative_key,
    reserved_input_folder,
    status_key,
    versions_key,
)
from zstc_contract.layout import manifest_key as layout_manifest_key
from zstc_contract.manifest import encode_manifest
from zstc_contract.settings import Target, TriggerSettings
from zstc_contract.settings import parse_targets as parse_targets  # re-exported: tests parse targets here
from zstc_contract.sizing import MULTI_RECORD, Batching, FileSample, choose_batching
from zstc_contract.uri import s3_uri
from zstc_contract.versions import encode_versions

# Claim states in the claims table.
CLAIMED: Final = "CLAIMED"  # claimed for a job that may not have started yet
STARTED: Final = "STARTED"  # the job that covers this object version exists
# Log messages the dashboard's instance-type widgets query (mirrored in stacks/batch.py).
JOB_STARTED_MESSAGE: Final = "Transform job started"
INSTANCE_REFUSED_MESSAGE: Final = "Instance type refused: quota too small for the job"
# A sampled record would take longer than the invocation timeout even alone (zstc_contract.sizing).
RECORD_TOO_SLOW_MESSAGE: Final = "A record cannot finish within the invocation timeout"
# Rows of the claims table that remember an instance type's quota refusal (pk = prefix + instance type).
REFUSAL_PK_PREFIX: Final = "quota-refusal#"


# --- S3 events ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class S3Object:
    """One object version named by an S3 event. ``revision`` tells versions of the same key apart."""

    bucket: str
    key: str
    revision: str
    size: int = 0

    @property
    def claim_id(self) -> str:
        return f"{self.bucket}/{self.key}#{self.revision}"

    @property
    def version_id(self) -> str | None:
        """The S3 version the event named (versioned buckets), else None (the current object)."""
        return self.revision[2:] if self.revision.startswith("v-") else None


@dataclass(frozen=True)
class Ignored:
    """An event (or part of one) that is deliberately not processed, with the reason logged and counted."""

    key: str | None
    reason: str


@dataclass
class ParsedMessage:
    # Files under the input prefix: each gets a job or a status record once S3 confirms it (HeadObject: the body's
    # size is only what the event claims).
    objects: list[S3Object] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)  # noise


def revision_of(obj: Mapping[str, Any]) -> str:
    """The identity of one object version in an event.

    ``versionId`` on versioned buckets; otherwise the event ``sequencer`` (a new PUT of the same key has a new
    one, a re-delivered event has the same one); the ETag as a last resort (moto sends neither).
    """
    if obj.get("versionId"):
        return "v-" + str(obj["versionId"])
    if obj.get("sequencer"):
        return "s-" + str(obj["sequencer"])
    return "e-" + str(obj.get("eTag", "")).strip('"')


def parse_message(body: str, settings: TriggerSettings) -> ParsedMessage:
    """Split an SQS message body (an S3 event notification) into work, empty inputs and ignored noise."""
    parsed = ParsedMessage()
    try:
        event = json.loads(body)
    except (TypeError, ValueError):
        parsed.ignored.append(Ignored(None, "message body is not JSON (not an S3 event notification)"))
        return parsed
    if not isinstance(event, dict):
        parsed.ignored.append(Ignored(None, "message body is not an S3 event notification"))
        return parsed
    if event.get("Event") == "s3:TestEvent":
        parsed.ignored.append(Ignored(None, "s3:TestEvent"))
        return parsed
    records = event.get("Records")
    if not isinstance(records, list):
        parsed.ignored.append(Ignored(None, "message has no S3 event records"))
        return parsed
    for record in records:
        _parse_record(record, settings, parsed)
    return parsed


def _parse_record(record: Any, settings: TriggerSettings, parsed: ParsedMessage) -> None:
    try:
        name = str(record.get("eventName", ""))
        bucket = str(record["s3"]["bucket"]["name"])
        obj = record["s3"]["object"]
        key = unquote_plus(str(obj["key"]))
        size = int(obj.get("size", 0) or 0)
    except (AttributeError, KeyError, TypeError, ValueError):
        parsed.ignored.append(Ignored(None, "malformed S3 event record"))
        return
    reason = _ignore_reason(name, bucket, key, settings)
    if reason:
        parsed.ignored.append(Ignored(key, reason))
        return
    parsed.objects.append(S3Object(bucket=bucket, key=key, revision=revision_of(obj), size=size))


def _ignore_reason(event_name: str, bucket: str, key: str, settings: TriggerSettings) -> str | None:
    if not event_name.startswith("ObjectCreated:"):
        return f"event {event_name or '(none)'} is not an object creation"
    if bucket != settings.bucket:
        return f"bucket {bucket} is not the stack's bucket {settings.bucket}"
    if not key.startswith(settings.input_prefix) or key == settings.input_prefix:
        return f"key is outside the input prefix {settings.input_prefix}"
    if key.endswith("/"):
        return "folder placeholder"
    if key.endswith(STATUS_SUFFIX):
        return f"a {STATUS_SUFFIX} object is a status record, not an input"
    return None


# --- files refused before any job ------------------------------------------------------------------------------------

LONG_KEY: Final = "long-key"
NOT_SUPPORTED: Final = "not-supported"
RESERVED: Final = "reserved"
OVERSIZED: Final = "oversized"  # records over the payload limit, where the stock handler serves
EMPTY: Final = "empty"
GAVE_UP: Final = "gave-up"


@dataclass(frozen=True)
class Refusal:
    """Why a confirmed file gets no job, and where its status record goes."""

    kind: str  # LONG_KEY | RESERVED | NOT_SUPPORTED
    status_key: str
    reason: str


def input_suffix(key: str) -> str:
    """The suffix a reason names: ``.jsonl.gz`` for gzip JSON Lines, else the base name's last ``.xxx`` part."""
    base = key.rsplit("/", 1)[-1]
    if base.endswith(GZIP_INPUT_SUFFIX):
        return GZIP_INPUT_SUFFIX
    return base[base.rfind(".") :] if "." in base.lstrip(".") else "(no suffix)"


def refusal(obj: S3Object, settings: TriggerSettings) -> Refusal | None:
    """A file the trigger refuses, or None for work: a key whose longest derived key (output, status record) would
    pass S3's 1,024 bytes (its status record goes under a hashed key), a key in a reserved folder
    (:data:`zstc_contract.layout.RESERVED_INPUT_FOLDERS`), then any suffix but ``.jsonl``.

    The job-name argument only needs the stack's job-name length (``<prefix>-<24 hex digits>``): one check for all."""
    relative = relative_key(obj.key, settings.input_prefix)
    longest = max(
        key_bytes(k)
        for k in derived_keys(
            input_prefix=settings.input_prefix,
            output_prefix=settings.output_prefix,
            errors_prefix=settings.errors_prefix,
            manifest_prefix=settings.manifest_prefix,
            relative=relative,
            job_name=f"{settings.job_name_prefix}-{'0' * DIGEST_CHARS}",  # as long as every job name of the stack
        )
    )
    if longest > MAX_KEY_BYTES:
        allowed = MAX_KEY_BYTES - (longest - key_bytes(obj.key))
        return Refusal(
            LONG_KEY,
            long_key_status_key(settings.errors_prefix, obj.key),
            f"The key is {key_bytes(obj.key)} bytes (UTF-8): its output or status record would be {longest} bytes, "
            f"past S3's {MAX_KEY_BYTES}-byte limit on keys. Upload the file under a key of at most {allowed} bytes.",
        )
    reserved = reserved_input_folder(relative)
    if reserved is not None:
        return Refusal(
            RESERVED,
            status_key(settings.errors_prefix, relative),
            f"Keys under {settings.input_prefix}{reserved} are reserved (their output would land in the stack's own "
            f"folder {settings.output_prefix}{reserved}): move the file out of {settings.input_prefix}{reserved} "
            "and upload it again.",
        )
    if not obj.key.endswith(INPUT_SUFFIX):
        suffix = input_suffix(obj.key)
        detail = " (gzip: the model handler reads uncompressed JSON Lines)" if suffix == GZIP_INPUT_SUFFIX else ""
        return Refusal(
            NOT_SUPPORTED,
            status_key(settings.errors_prefix, relative),
            f"not supported: {suffix}{detail}; upload JSON Lines as {INPUT_SUFFIX} (uncompressed), one request per "
            "line.",
        )
    return None


def is_last_receive(receive_count: int, settings: TriggerSettings) -> bool:
    """True on the receive after which SQS moves the message to the dead-letter queue (its last try here)."""
    return settings.max_receive_count is not None and receive_count >= settings.max_receive_count


def waited_seconds(receive_count: int, settings: TriggerSettings) -> int:
    """About how long a message deferred at each of its ``receive_count`` receives has waited (the backoffs)."""
    return sum(
        backoff_seconds(n, base=settings.backoff_base_seconds, maximum=settings.backoff_max_seconds)
        for n in range(1, receive_count)
    )


def gave_up_reason(receive_count: int, settings: TriggerSettings, last_reason: str) -> str:
    hours = waited_seconds(receive_count, settings) / 3600
    return (
        f"gave up after {hours:.1f} hours ({receive_count} tries): {last_reason}; the file is in the dead-letter "
        "queue; re-drive it (SQS: start a DLQ redrive to the batch queue) or re-upload it."
    )


def refusal_notice(settings: TriggerSettings, kind: str, files: Sequence[tuple[str, str]]) -> dict[str, str]:
    """SNS subject (≤ 100 ASCII characters) and message for files (input URI, reason) the trigger refused or gave
    up on, one notice per kind and batch."""
    subject = {
        LONG_KEY: "Batch files refused: keys too long",
        NOT_SUPPORTED: "Batch files refused: not supported",
        RESERVED: "Batch files refused: reserved folder",
        OVERSIZED: "Batch files refused: records over the payload limit",
        GAVE_UP: "Batch files given up: in the dead-letter queue",
    }.get(kind, f"Batch files refused: {kind}")[:100]
    body = {
        "kind": kind,
        "files": len(files),
        "inputs": [{"input": uri, "reason": reason} for uri, reason in files[:50]],
        "status_records": s3_uri(settings.bucket, settings.errors_prefix),
    }
    return {"Subject": subject, "Message": json.dumps(body, ensure_ascii=False, indent=2)}


# --- names, groups, manifest, request ----------------------------------------------------------------------------


def group_objects(objects: Iterable[S3Object], *, window_seconds: int, max_files: int) -> list[list[S3Object]]:
    """Coalesce one Lambda batch: window 0 → one job per object; otherwise one job per ``max_files`` objects."""
    unique = sorted({o.claim_id: o for o in objects}.values())
    size = 1 if window_seconds == 0 else max_files
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def manifest_key(settings: TriggerSettings, name: str) -> str:
    return layout_manifest_key(settings.manifest_prefix, name)


def manifest_body(settings: TriggerSettings, objects: Sequence[S3Object], prefix: str | None = None) -> bytes:
    """SageMaker manifest: a prefix entry, then keys relative to it.

    The prefix is the input prefix (or, for a job that reads re-staged files, its folder under
    ``manifests/_staged/``, which holds the same relative keys), so each entry is the key's path below ``input/``.
    SageMaker names each output in the job's own folder (``S3OutputPath``) after the entry, its base name or the
    full key (undocumented); the job-outcome function matches them and publishes ``output/<entry>.out``.
    """
    return encode_manifest(
        s3_uri(settings.bucket, settings.input_prefix if prefix is None else prefix),
        [relative_key(o.key, settings.input_prefix) for o in objects],
    )


def versions_sidecar(settings: TriggerSettings, name: str, objects: Sequence[S3Object]) -> tuple[str, bytes]:
    """(key, body) of the versions sidecar of job ``name``'s manifest: the object version each entry was claimed at
    (the manifest lists keys only), for the job-outcome function's status records and its overwrite check."""
    entries = [(relative_key(o.key, settings.input_prefix), o.revision) for o in objects]
    return versions_key(settings.manifest_prefix, name), encode_versions(name, entries)


def job_batching(
    settings: TriggerSettings, target: Target, samples: Sequence[FileSample], *, largest_record_bytes: int = 0
) -> Batching:
    """How a job on ``target`` batches its records: from the target's pair rate and the files' sampled density,
    within the configured payload and timeout, never below the job's largest record (``zstc_contract.sizing``)."""
    return choose_batching(
        samples,
        pairs_per_second=target.pairs_per_second,
        timeout_seconds=settings.model_timeout_seconds,
        max_payload_mb=settings.max_payload_mb,
        multi_record=settings.batch_strategy == MULTI_RECORD,
        largest_record_bytes=largest_record_bytes,
    )


def transform_request(
    settings: TriggerSettings,
    name: str,
    manifest_uri: str,
    files: int,
    target: Target,
    batching: Batching | None = None,
) -> dict[str, Any]:
    """The ``CreateTransformJob`` request for one manifest on one instance type (``target``).

    Line split/assemble with MultiRecord batches keeps one output line per input line in order (the handler
    answers a MultiRecord body line for line and echoes ``id``). VPC config and the execution role come from the
    model, and so does the model server's timeout (the model's environment matches ``batch_model_timeout_seconds``).
    The volume KMS key is the target's: the stack omits it on NVMe instance types, whose local storage SageMaker
    cannot KMS-encrypt. ``batching`` (:func:`job_batching`) sets ``BatchStrategy`` / ``MaxPayloadInMB`` so that one
    invocation stays well inside the timeout; without it the configured values apply.
    """
    batching = batching or job_batching(settings, target, [])
    resources: dict[str, Any] = {"InstanceType": target.instance_type, "InstanceCount": settings.instance_count}
    if target.volume_kms_key:
        resources["VolumeKmsKeyId"] = target.volume_kms_key
    # The stock handler accepts exactly application/json, one record per request; ours JSON Lines, one or many.
    content_type = "application/jsonlines" if settings.batch_strategy == MULTI_RECORD else "application/json"
    return {
        "TransformJobName": name,
        "ModelName": target.model_name,
        "MaxConcurrentTransforms": settings.max_concurrent_transforms,
        "MaxPayloadInMB": batching.max_payload_mb,
        "BatchStrategy": batching.strategy,
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": settings.model_timeout_seconds,
            "InvocationsMaxRetries": settings.model_retries,
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": manifest_uri}},
            "ContentType": content_type,
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {
            # The job's own folder: nothing in it can be an earlier run's (zstc_contract.layout.job_output_prefix).
            "S3OutputPath": s3_uri(settings.bucket, job_output_prefix(settings.output_prefix, name)),
            "Accept": content_type,
            "AssembleWith": "Line",
            "KmsKeyId": settings.kms_key_arn,
        },
        "TransformResources": resources,
        # Output lines are the handler's own answers (it echoes "id"): no input/output join.
        "DataProcessing": {"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"},
        "Tags": [
            {"Key": "zstc:batch", "Value": name},
            {"Key": "zstc:manifest", "Value": manifest_uri[:256]},
            {"Key": "zstc:files", "Value": str(files)},
            {"Key": "zstc:job-prefix", "Value": settings.job_name_prefix},
            {"Key": "zstc:instance-type", "Value": target.instance_type},
            {"Key": "zstc:batch-strategy", "Value": f"{batching.strategy} {batching.max_payload_mb} MB"},
        ],
    }


# --- SageMaker answers -----------------------------------------------------------------------------------------------

DEFERRABLE_CODES: Final = frozenset(
    {"ResourceLimitExceeded", "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException"}
)


def is_name_taken(code: str, message: str) -> bool:
    """SageMaker's answer when a job of that name already exists (it did our work earlier)."""
    if code in ("ResourceInUse", "ResourceInUseException"):
        return True
    text = message.lower()
    return code == "ValidationException" and ("already in use" in text or "must be unique" in text)


def is_deferrable(code: str) -> bool:
    """Quota or throttling: the work must wait in the queue, not fail."""
    return code in DEFERRABLE_CODES


# SageMaker's text for an account quota, e.g. "The account-level service limit 'ml.g4dn.xlarge for transform job
# usage' is 0 Instances, with current utilization of 0 Instances and a request delta of 1 Instances. Please contact
# AWS support to request an increase for this limit." Other limits use the same sentence with another quota name
# ('Number of instances across all transform jobs', concurrent jobs): those are not about one instance type.
_LIMIT_TEXT: Final = re.compile(
    r"service limit '(?P<quota>[^']+)' is (?P<limit>\d+) \w+, with current utilization of (?P<used>\d+) \w+ "
    r"and a request delta of (?P<delta>\d+)"
)


@dataclass(frozen=True)
class QuotaAnswer:
    """A ``ResourceLimitExceeded`` about one instance type's transform-job quota.

    ``too_small``: the quota is below what the job needs even with nothing else running (new accounts often have 0
    for GPU types): move the job to the next instance type and remember the refusal. Otherwise the quota is large
    enough but in use right now: the job waits (deferred) like for the concurrent-job limit.
    """

    instance_type: str
    quota_name: str
    limit: int | None
    used: int | None
    needed: int | None

    @property
    def too_small(self) -> bool:
        return self.limit is None or self.needed is None or self.limit < self.needed


def instance_quota_answer(code: str, message: str, instance_type: str) -> QuotaAnswer | None:
    """The quota answer when SageMaker refused ``instance_type`` itself; None for any other answer (including the
    account-wide limits on instances and concurrent jobs, which are retried as before)."""
    if code != "ResourceLimitExceeded":
        return None
    quota_name = f"{instance_type} for transform job usage"
    if quota_name not in message:
        return None
    match = _LIMIT_TEXT.search(message)
    if match is None or match.group("quota") != quota_name:
        return QuotaAnswer(instance_type, quota_name, None, None, None)
    return QuotaAnswer(
        instance_type, quota_name, int(match.group("limit")), int(match.group("used")), int(match.group("delta"))
    )


def refusal_pk(instance_type: str) -> str:
    return REFUSAL_PK_PREFIX + instance_type


def try_order(targets: Sequence[Target], refused: Iterable[str]) -> list[Target]:
    """The targets to try, in order: those not remembered as refused; all of them when every one is (a remembered
    refusal only skips a type while another may work, so a raised quota is noticed)."""
    refused_set = set(refused)
    open_targets = [t for t in targets if t.instance_type not in refused_set]
    return open_targets or list(targets)


def refusal_reason(answers: Sequence[QuotaAnswer], instance_count: int) -> str:
    """The status-record reason when every instance type was refused by its quota."""
    parts = [f"'{a.quota_name}' is {a.limit if a.limit is not None else '?'}" for a in answers]
    return (
        f"No configured instance type has quota for this job ({instance_count} instance(s)): "
        + "; ".join(parts)
        + ". Request an increase in the Service Quotas console (Amazon SageMaker, '<type> for transform job usage') "
        "or deploy with -c batch_instance_types=<types you have quota for>, then upload the file again."
    )


# --- claims -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A row of the claims table (the attributes this code reads)."""

    job_name: str
    state: str
    owner: str  # SQS message id that made the claim
    claimed_at: int

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Claim:
        def plain(value: Any) -> Any:
            # Accept both the low-level ({"S": ...}) and the resource-level item shape.
            if isinstance(value, dict) and len(value) == 1:
                ((kind, inner),) = value.items()
                return int(inner) if kind == "N" else inner
            return value

        return cls(
            job_name=str(plain(item.get("job_name", ""))),
            state=str(plain(item.get("state", CLAIMED))),
            owner=str(plain(item.get("owner", ""))),
            claimed_at=int(plain(item.get("claimed_at", 0))),
        )


def claim_decision(claim: Claim, *, message_ids: Iterable[str], now: int, grace_seconds: int) -> str:
    """What to do with an object version another (or an earlier) attempt already claimed.

    - ``duplicate``: its job exists (STARTED), or another invocation holds it right now: the message that made
      the claim is still in flight and will either start the job or come back to the queue. Nothing to do.
    - ``resume``: the claim is ours (this message made it: our earlier attempt crashed or was deferred) or it is
      older than the grace period (its owner is certainly gone): finish the work the claim stands for.
    """
    if claim.state == STARTED:
        return "duplicate"
    if claim.owner in set(message_ids) or now - claim.claimed_at >= grace_seconds:
        return "resume"
    return "duplicate"
