"""Pure logic of the batch trigger: no AWS calls, no clock, no randomness.

Everything here is a function of its arguments, so the unit tests exercise it without moto or stubs:
settings parsing, S3 event parsing (URL-decoded keys, noise), job-name derivation, grouping, the manifest, the
``CreateTransformJob`` request, claim decisions and the deferral backoff.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

from zstc_contract import (  # the batch layer, shared with the job-outcome function
    DIGEST_CHARS,
    SettingsError,
    encode_manifest,
    prefix_env,
    required_env,
)
from zstc_contract.backoff import MAX_VISIBILITY_SECONDS

JOB_NAME: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# The job-name prefix is lower case: SageMaker lowercases names in resource ARNs, so the IAM policy
# (`transform-job/<prefix>-*`) only matches names whose prefix is already lower case.
JOB_PREFIX: Final = re.compile(r"^[a-z0-9](-?[a-z0-9]){0,37}$")
MAX_JOB_PREFIX: Final = 63 - 1 - DIGEST_CHARS  # 38
SUFFIX: Final = ".jsonl"
GZIP_SUFFIX: Final = ".jsonl.gz"

# Claim states in the claims table.
CLAIMED: Final = "CLAIMED"  # claimed for a job that may not have started yet
STARTED: Final = "STARTED"  # the job that covers this object version exists
# Log messages the dashboard's instance-type widgets query (mirrored in stacks/batch.py).
JOB_STARTED_MESSAGE: Final = "Transform job started"
INSTANCE_REFUSED_MESSAGE: Final = "Instance type refused: quota too small for the job"
# Rows of the claims table that remember an instance type's quota refusal (pk = prefix + instance type).
REFUSAL_PK_PREFIX: Final = "quota-refusal#"
INSTANCE_TYPE: Final = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")


# --- settings -----------------------------------------------------------------------------------------------------


def _int(env: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise SettingsError(f"{name} is not set: expected an integer from {low} to {high}")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: expected an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class Target:
    """One instance type a job may run on, with what the stack decided for it: the SageMaker model (of the right
    container family) and the volume KMS key (None on instance types with local NVMe storage, which reject one)."""

    instance_type: str
    model_name: str
    volume_kms_key: str | None


def parse_targets(raw: str | None) -> tuple[Target, ...]:
    """``BATCH_TARGETS``: a JSON list, most preferred first, of ``{instance_type, model_name, volume_kms_key}``."""
    example = '[{"instance_type": "ml.m5.xlarge", "model_name": "m", "volume_kms_key": null}]'
    if not raw:
        raise SettingsError(f"BATCH_TARGETS is not set: the batch stack sets it on the function, e.g. {example}")
    try:
        items = json.loads(raw)
    except ValueError:
        items = None
    if not isinstance(items, list) or not items:
        raise SettingsError(f"BATCH_TARGETS={raw!r}: expected a non-empty JSON list, e.g. {example}")
    targets: list[Target] = []
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("instance_type"), str)
            or not INSTANCE_TYPE.match(item["instance_type"])
            or not isinstance(item.get("model_name"), str)
            or not item["model_name"]
            or not isinstance(item.get("volume_kms_key"), str | None)
        ):
            raise SettingsError(f"BATCH_TARGETS entry {item!r}: expected e.g. {example}")
        targets.append(Target(item["instance_type"], item["model_name"], item.get("volume_kms_key") or None))
    if len({t.instance_type for t in targets}) != len(targets):
        raise SettingsError(f"BATCH_TARGETS={raw!r}: each instance type may be listed once")
    return tuple(targets)


@dataclass(frozen=True, kw_only=True)
class TriggerSettings:
    """The trigger function's configuration, read once from its environment (set by ``stacks/batch.py``)."""

    bucket: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    errors_prefix: str = "errors/"
    manifest_prefix: str = "manifests/"
    claims_table: str
    queue_url: str
    job_name_prefix: str
    targets: tuple[Target, ...]  # most preferred first
    instance_count: int = 1
    max_concurrent_jobs: int = 2
    max_payload_mb: int = 1
    max_concurrent_transforms: int = 1
    model_timeout_seconds: int = 3600
    model_retries: int = 1
    kms_key_arn: str
    refusal_ttl_seconds: int = 6 * 3600  # how long a quota refusal of an instance type is remembered
    window_seconds: int = 60
    max_files_per_job: int = 1000
    claim_ttl_seconds: int = 15 * 86_400
    claim_grace_seconds: int = 300
    backoff_base_seconds: int = 60
    backoff_max_seconds: int = 900
    # MultiRecord: our handler answers a JSON Lines mini-batch line for line. SingleRecord: one line per request as
    # application/json, for the toolkit's stock handler (model_source=hub ships no handler).
    batch_strategy: str = "MultiRecord"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TriggerSettings:
        prefix = required_env(env, "JOB_NAME_PREFIX")
        if not JOB_PREFIX.match(prefix):
            raise SettingsError(
                f"JOB_NAME_PREFIX={prefix!r}: expected 1-{MAX_JOB_PREFIX} lower-case letters, digits and single "
                "hyphens, e.g. 'zeroshot-batch'"
            )
        settings = cls(
            bucket=required_env(env, "BUCKET_NAME"),
            input_prefix=prefix_env(env, "INPUT_PREFIX", "input/"),
            output_prefix=prefix_env(env, "OUTPUT_PREFIX", "output/"),
            errors_prefix=prefix_env(env, "ERRORS_PREFIX", "errors/"),
            manifest_prefix=prefix_env(env, "MANIFEST_PREFIX", "manifests/"),
            claims_table=required_env(env, "CLAIMS_TABLE"),
            queue_url=required_env(env, "QUEUE_URL"),
            job_name_prefix=prefix,
            targets=parse_targets(env.get("BATCH_TARGETS")),
            instance_count=_int(env, "INSTANCE_COUNT", 1, 1, 100),
            max_concurrent_jobs=_int(env, "MAX_CONCURRENT_JOBS", 2, 1, 100),
            max_payload_mb=_int(env, "MAX_PAYLOAD_MB", 1, 1, 100),
            max_concurrent_transforms=_int(env, "MAX_CONCURRENT_TRANSFORMS", 1, 1, 100),
            model_timeout_seconds=_int(env, "MODEL_TIMEOUT_SECONDS", 3600, 1, 3600),
            model_retries=_int(env, "MODEL_RETRIES", 1, 0, 3),
            kms_key_arn=required_env(env, "KMS_KEY_ARN"),
            refusal_ttl_seconds=_int(env, "QUOTA_REFUSAL_TTL_SECONDS", 6 * 3600, 60, 7 * 86_400),
            window_seconds=_int(env, "BATCH_WINDOW_SECONDS", 60, 0, 300),
            max_files_per_job=_int(env, "MAX_FILES_PER_JOB", 1000, 1, 10_000),
            claim_ttl_seconds=_int(env, "CLAIM_TTL_SECONDS", 15 * 86_400, 3600, 366 * 86_400),
            claim_grace_seconds=_int(env, "CLAIM_GRACE_SECONDS", 300, 1, 86_400),
            backoff_base_seconds=_int(env, "BACKOFF_BASE_SECONDS", 60, 1, MAX_VISIBILITY_SECONDS),
            backoff_max_seconds=_int(env, "BACKOFF_MAX_SECONDS", 900, 1, MAX_VISIBILITY_SECONDS),
            batch_strategy=env.get("BATCH_STRATEGY", "MultiRecord"),
        )
        if settings.batch_strategy not in ("MultiRecord", "SingleRecord"):
            raise SettingsError(f"BATCH_STRATEGY={settings.batch_strategy!r}: expected MultiRecord or SingleRecord")
        if settings.max_payload_mb * settings.max_concurrent_transforms > 100:
            raise SettingsError(
                f"MAX_PAYLOAD_MB={settings.max_payload_mb} × MAX_CONCURRENT_TRANSFORMS="
                f"{settings.max_concurrent_transforms} exceeds SageMaker's limit of 100: lower one of them"
            )
        if len({settings.input_prefix, settings.output_prefix, settings.errors_prefix, settings.manifest_prefix}) < 4:
            raise SettingsError("INPUT_PREFIX, OUTPUT_PREFIX, ERRORS_PREFIX and MANIFEST_PREFIX must differ")
        for other in (settings.output_prefix, settings.errors_prefix, settings.manifest_prefix):
            if other.startswith(settings.input_prefix) or settings.input_prefix.startswith(other):
                raise SettingsError(
                    f"INPUT_PREFIX={settings.input_prefix!r} overlaps {other!r}: outputs written there would "
                    "trigger new jobs; keep the prefixes disjoint"
                )
        return settings

    def target(self, instance_type: str) -> Target:
        return next(t for t in self.targets if t.instance_type == instance_type)


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


@dataclass(frozen=True)
class Ignored:
    """An event (or part of one) that is deliberately not processed, with the reason logged and counted."""

    key: str | None
    reason: str


@dataclass
class ParsedMessage:
    objects: list[S3Object] = field(default_factory=list)  # work
    empty: list[S3Object] = field(default_factory=list)  # zero-byte inputs: a status record, no job
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
    target = parsed.empty if size == 0 else parsed.objects
    target.append(S3Object(bucket=bucket, key=key, revision=revision_of(obj), size=size))


def _ignore_reason(event_name: str, bucket: str, key: str, settings: TriggerSettings) -> str | None:
    if not event_name.startswith("ObjectCreated:"):
        return f"event {event_name or '(none)'} is not an object creation"
    if bucket != settings.bucket:
        return f"bucket {bucket} is not the stack's bucket {settings.bucket}"
    if not key.startswith(settings.input_prefix) or key == settings.input_prefix:
        return f"key is outside the input prefix {settings.input_prefix}"
    if key.endswith(GZIP_SUFFIX):
        return "gzip input is not supported by the model handler: upload the uncompressed .jsonl"
    if not key.endswith(SUFFIX):
        return "not a .jsonl object"
    return None


# --- names, groups, manifest, request ----------------------------------------------------------------------------


def job_name(prefix: str, objects: Iterable[S3Object], generation: int = 0) -> str:
    """Deterministic transform-job name for a set of object versions.

    Same set (in any order, with duplicates) → same name; any other set, another version of a key or another
    generation → another name. ``<prefix>-<24 hex digits of SHA-256>`` always matches SageMaker's pattern.
    """
    digest = hashlib.sha256()
    for claim_id in sorted({o.claim_id for o in objects}):
        digest.update(claim_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    digest.update(f"generation={generation}".encode())
    return f"{prefix}-{digest.hexdigest()[:DIGEST_CHARS]}"


def group_objects(objects: Iterable[S3Object], *, window_seconds: int, max_files: int) -> list[list[S3Object]]:
    """Coalesce one Lambda batch: window 0 → one job per object; otherwise one job per ``max_files`` objects."""
    unique = sorted({o.claim_id: o for o in objects}.values())
    size = 1 if window_seconds == 0 else max_files
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def relative_key(key: str, input_prefix: str) -> str:
    return key[len(input_prefix) :]


def manifest_key(settings: TriggerSettings, name: str) -> str:
    return f"{settings.manifest_prefix}{name}.json"


def manifest_body(settings: TriggerSettings, objects: Sequence[S3Object]) -> bytes:
    """SageMaker manifest: a prefix entry, then keys relative to it.

    The prefix is the input prefix, so each entry is the key's path below ``input/``; SageMaker names each output
    ``<S3OutputPath><entry>.out``, which keeps ``input/a/b.jsonl`` → ``output/a/b.jsonl.out``.
    """
    return encode_manifest(
        f"s3://{settings.bucket}/{settings.input_prefix}", [relative_key(o.key, settings.input_prefix) for o in objects]
    )


def transform_request(
    settings: TriggerSettings, name: str, manifest_uri: str, files: int, target: Target
) -> dict[str, Any]:
    """The ``CreateTransformJob`` request for one manifest on one instance type (``target``).

    Line split/assemble with MultiRecord batches keeps one output line per input line in order (the handler
    answers a MultiRecord body line for line and echoes ``id``). VPC config and the execution role come from the
    model, and so does the model server's timeout (the model's environment matches ``batch_model_timeout_seconds``).
    The volume KMS key is the target's: the stack omits it on NVMe instance types, whose local storage SageMaker
    cannot KMS-encrypt.
    """
    resources: dict[str, Any] = {"InstanceType": target.instance_type, "InstanceCount": settings.instance_count}
    if target.volume_kms_key:
        resources["VolumeKmsKeyId"] = target.volume_kms_key
    # The stock handler accepts exactly application/json, one record per request.
    content_type = "application/jsonlines" if settings.batch_strategy == "MultiRecord" else "application/json"
    return {
        "TransformJobName": name,
        "ModelName": target.model_name,
        "MaxConcurrentTransforms": settings.max_concurrent_transforms,
        "MaxPayloadInMB": settings.max_payload_mb,
        "BatchStrategy": settings.batch_strategy,
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
            "S3OutputPath": f"s3://{settings.bucket}/{settings.output_prefix}",
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
