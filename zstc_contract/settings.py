"""The batch functions' environment: every variable's name (declared once, here) and the one typed reader of each
function's settings. ``stacks/batch_environment.py`` writes these variables; the functions read them at cold start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from zstc_contract.backoff import MAX_VISIBILITY_SECONDS
from zstc_contract.jobs import JOB_PREFIX, MAX_JOB_PREFIX
from zstc_contract.layout import PREFIXES
from zstc_contract.rates import DEFAULT_TOKENS_PER_PAIR


class Env:
    """Names of the environment variables the stack sets on the batch functions."""

    BUCKET_NAME: Final = "BUCKET_NAME"
    INPUT_PREFIX: Final = "INPUT_PREFIX"
    OUTPUT_PREFIX: Final = "OUTPUT_PREFIX"
    ERRORS_PREFIX: Final = "ERRORS_PREFIX"
    MANIFEST_PREFIX: Final = "MANIFEST_PREFIX"
    JOB_NAME_PREFIX: Final = "JOB_NAME_PREFIX"
    METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
    LOG_LEVEL: Final = "POWERTOOLS_LOG_LEVEL"
    SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
    # the trigger
    CLAIMS_TABLE: Final = "CLAIMS_TABLE"
    QUEUE_URL: Final = "QUEUE_URL"
    BATCH_TARGETS: Final = "BATCH_TARGETS"
    QUOTA_REFUSAL_TTL_SECONDS: Final = "QUOTA_REFUSAL_TTL_SECONDS"
    INSTANCE_COUNT: Final = "INSTANCE_COUNT"
    MAX_CONCURRENT_JOBS: Final = "MAX_CONCURRENT_JOBS"
    MAX_PAYLOAD_MB: Final = "MAX_PAYLOAD_MB"
    MAX_CONCURRENT_TRANSFORMS: Final = "MAX_CONCURRENT_TRANSFORMS"
    MODEL_TIMEOUT_SECONDS: Final = "MODEL_TIMEOUT_SECONDS"
    MODEL_RETRIES: Final = "MODEL_RETRIES"
    KMS_KEY_ARN: Final = "KMS_KEY_ARN"
    BATCH_WINDOW_SECONDS: Final = "BATCH_WINDOW_SECONDS"
    MAX_FILES_PER_JOB: Final = "MAX_FILES_PER_JOB"
    CLAIM_TTL_SECONDS: Final = "CLAIM_TTL_SECONDS"
    CLAIM_GRACE_SECONDS: Final = "CLAIM_GRACE_SECONDS"
    BACKOFF_BASE_SECONDS: Final = "BACKOFF_BASE_SECONDS"
    BACKOFF_MAX_SECONDS: Final = "BACKOFF_MAX_SECONDS"
    BATCH_STRATEGY: Final = "BATCH_STRATEGY"
    MAX_RECEIVE_COUNT: Final = "MAX_RECEIVE_COUNT"  # the queue's redrive maxReceiveCount (last try before the DLQ)
    # The key of a record the trigger took out of its file (larger than the payload limit), which the model handler
    # answers with an error record; empty where the stock handler serves (it knows no such record).
    REJECTED_RECORD_FIELD: Final = "REJECTED_RECORD_FIELD"
    INSTANCE_TYPE: Final = "INSTANCE_TYPE"  # earlier versions' single batch instance type (read by zstc doctor)
    # the job-outcome function (and the trigger: its notices of files refused or given up)
    TOPIC_ARN: Final = "TOPIC_ARN"
    COUNT_RECORDS_MAX_BYTES: Final = "COUNT_RECORDS_MAX_BYTES"


INSTANCE_TYPE: Final = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
BATCH_STRATEGIES: Final = ("MultiRecord", "SingleRecord")
COUNT_RECORDS_MAX_BYTES: Final = 100 * 1024 * 1024


class SettingsError(ValueError):
    """An environment variable is missing or invalid; the message names it, the bad value and the fix."""


def required_env(env: Mapping[str, str], name: str, expected: str = "") -> str:
    """``name``'s value; missing or empty fails naming it (the stack sets every variable it declares, so a missing
    one means an environment not written by ``stacks/batch_environment.py``, not a default to fall back on)."""
    value = env.get(name, "")
    if not value:
        hint = f" ({expected})" if expected else ""
        raise SettingsError(f"{name} is not set{hint}: the batch stack sets it on the function; redeploy the stack")
    return value


def prefix_env(env: Mapping[str, str], name: str, example: str) -> str:
    value = required_env(env, name, f"an S3 key prefix ending in '/', e.g. {example!r}")
    if not value.endswith("/") or value.startswith("/"):
        raise SettingsError(f"{name}={value!r}: expected an S3 key prefix ending in '/', e.g. {example!r}")
    return value


def int_env(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    expected = f"an integer from {low} to {high}"
    raw = required_env(env, name, expected)
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name}={raw!r}: expected {expected}")
    return value


@dataclass(frozen=True)
class Target:
    """One instance type a job may run on, with what the stack decided for it: the SageMaker model (of the right
    container family), the volume KMS key (None on instance types with local NVMe storage, which reject one) and the
    handler's pair rate there for the configured model (``zstc_contract.rates``; None where the table has no
    figure), from which the trigger sizes each job's mini-batches (``zstc_contract.sizing``)."""

    instance_type: str
    model_name: str
    volume_kms_key: str | None
    pairs_per_second: float | None = None
    tokens_per_pair: float = DEFAULT_TOKENS_PER_PAIR

    def to_json(self) -> dict[str, str | float | None]:
        return {
            "instance_type": self.instance_type,
            "model_name": self.model_name,
            "volume_kms_key": self.volume_kms_key,
            "pairs_per_second": self.pairs_per_second,
            "tokens_per_pair": self.tokens_per_pair,
        }


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")


def parse_targets(raw: str | None) -> tuple[Target, ...]:
    """``BATCH_TARGETS``: a JSON list, most preferred first, of ``{instance_type, model_name, volume_kms_key,
    pairs_per_second, tokens_per_pair}`` (the last two optional)."""
    name = Env.BATCH_TARGETS
    example = '[{"instance_type": "ml.m5.xlarge", "model_name": "m", "volume_kms_key": null}]'
    if not raw:
        raise SettingsError(f"{name} is not set: the batch stack sets it on the function, e.g. {example}")
    try:
        items = json.loads(raw)
    except ValueError:
        items = None
    if not isinstance(items, list) or not items:
        raise SettingsError(f"{name}={raw!r}: expected a non-empty JSON list, e.g. {example}")
    targets: list[Target] = []
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("instance_type"), str)
            or not INSTANCE_TYPE.match(item["instance_type"])
            or not isinstance(item.get("model_name"), str)
            or not item["model_name"]
            or not isinstance(item.get("volume_kms_key"), str | None)
            or not (item.get("pairs_per_second") is None or _positive_number(item["pairs_per_second"]))
            or not _positive_number(item.get("tokens_per_pair", DEFAULT_TOKENS_PER_PAIR))
        ):
            raise SettingsError(f"{name} entry {item!r}: expected e.g. {example}")
        rate = item.get("pairs_per_second")
        targets.append(
            Target(
                item["instance_type"],
                item["model_name"],
                item.get("volume_kms_key") or None,
                float(rate) if rate is not None else None,
                float(item.get("tokens_per_pair", DEFAULT_TOKENS_PER_PAIR)),
            )
        )
    if len({t.instance_type for t in targets}) != len(targets):
        raise SettingsError(f"{name}={raw!r}: each instance type may be listed once")
    return tuple(targets)


# Every field below without a default is a variable ``stacks/batch_environment.py`` always sets: its value, and so
# its default, is decided there (from ``stacks.config.Settings``, the one place for the user's settings, or from the
# stack's own constants). ``from_env`` requires each; a missing one fails naming it instead of passing with a value
# that may differ from the stack's. Defaults remain only for what has a meaning when absent.


@dataclass(frozen=True, kw_only=True)
class BucketSettings:
    """What both functions read alike: the data bucket, its prefixes and the stack's job-name prefix."""

    bucket: str
    input_prefix: str
    output_prefix: str
    errors_prefix: str
    manifest_prefix: str
    job_name_prefix: str


def _bucket_env(env: Mapping[str, str]) -> dict[str, str]:
    """The :class:`BucketSettings` fields but the job-name prefix (each function checks that its own way)."""
    return {
        "bucket": required_env(env, Env.BUCKET_NAME),
        "input_prefix": prefix_env(env, Env.INPUT_PREFIX, PREFIXES.input),
        "output_prefix": prefix_env(env, Env.OUTPUT_PREFIX, PREFIXES.output),
        "errors_prefix": prefix_env(env, Env.ERRORS_PREFIX, PREFIXES.errors),
        "manifest_prefix": prefix_env(env, Env.MANIFEST_PREFIX, PREFIXES.manifests),
    }


@dataclass(frozen=True, kw_only=True)
class TriggerSettings(BucketSettings):
    """The trigger function's configuration, read once from its environment (``trigger_environment`` in
    ``stacks/batch_environment.py``, which documents each value)."""

    claims_table: str
    queue_url: str
    targets: tuple[Target, ...]  # most preferred first
    instance_count: int
    max_concurrent_jobs: int
    max_payload_mb: int
    max_concurrent_transforms: int
    model_timeout_seconds: int
    model_retries: int
    kms_key_arn: str
    refusal_ttl_seconds: int  # how long a quota refusal of an instance type is remembered
    window_seconds: int
    max_files_per_job: int
    claim_ttl_seconds: int
    claim_grace_seconds: int
    backoff_base_seconds: int
    backoff_max_seconds: int
    # MultiRecord: our handler answers a JSON Lines mini-batch line for line. SingleRecord: one line per request as
    # application/json, for the toolkit's stock handler (model_source=hub ships no handler).
    batch_strategy: str
    # Where the trigger notifies of files it refuses or gives up on (None: logged only).
    topic_arn: str | None = None
    # The queue's maxReceiveCount: the receive after which a message is in the dead-letter queue (None: unknown).
    max_receive_count: int | None = None
    # The handler's key for records the trigger rejects (None: the stock handler, oversized records are not staged).
    rejected_record_field: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TriggerSettings:
        prefix = required_env(env, Env.JOB_NAME_PREFIX)
        if not JOB_PREFIX.match(prefix):
            raise SettingsError(
                f"{Env.JOB_NAME_PREFIX}={prefix!r}: expected 1-{MAX_JOB_PREFIX} lower-case letters, digits and "
                "single hyphens, e.g. 'zeroshot-batch'"
            )
        settings = cls(
            **_bucket_env(env),
            claims_table=required_env(env, Env.CLAIMS_TABLE),
            queue_url=required_env(env, Env.QUEUE_URL),
            job_name_prefix=prefix,
            targets=parse_targets(env.get(Env.BATCH_TARGETS)),
            instance_count=int_env(env, Env.INSTANCE_COUNT, 1, 100),
            max_concurrent_jobs=int_env(env, Env.MAX_CONCURRENT_JOBS, 1, 100),
            max_payload_mb=int_env(env, Env.MAX_PAYLOAD_MB, 1, 100),
            max_concurrent_transforms=int_env(env, Env.MAX_CONCURRENT_TRANSFORMS, 1, 100),
            model_timeout_seconds=int_env(env, Env.MODEL_TIMEOUT_SECONDS, 1, 3600),
            model_retries=int_env(env, Env.MODEL_RETRIES, 0, 3),
            kms_key_arn=required_env(env, Env.KMS_KEY_ARN),
            refusal_ttl_seconds=int_env(env, Env.QUOTA_REFUSAL_TTL_SECONDS, 60, 7 * 86_400),
            window_seconds=int_env(env, Env.BATCH_WINDOW_SECONDS, 0, 300),
            max_files_per_job=int_env(env, Env.MAX_FILES_PER_JOB, 1, 10_000),
            claim_ttl_seconds=int_env(env, Env.CLAIM_TTL_SECONDS, 3600, 366 * 86_400),
            claim_grace_seconds=int_env(env, Env.CLAIM_GRACE_SECONDS, 1, 86_400),
            backoff_base_seconds=int_env(env, Env.BACKOFF_BASE_SECONDS, 1, MAX_VISIBILITY_SECONDS),
            backoff_max_seconds=int_env(env, Env.BACKOFF_MAX_SECONDS, 1, MAX_VISIBILITY_SECONDS),
            batch_strategy=required_env(env, Env.BATCH_STRATEGY, " or ".join(BATCH_STRATEGIES)),
            # Optional: each has a meaning when absent or empty (the functions handle None), see the fields.
            topic_arn=env.get(Env.TOPIC_ARN) or None,
            max_receive_count=(
                int_env(env, Env.MAX_RECEIVE_COUNT, 1, 1000) if env.get(Env.MAX_RECEIVE_COUNT) else None
            ),
            rejected_record_field=env.get(Env.REJECTED_RECORD_FIELD) or None,  # empty where the stock handler serves
        )
        if settings.batch_strategy not in BATCH_STRATEGIES:
            raise SettingsError(
                f"{Env.BATCH_STRATEGY}={settings.batch_strategy!r}: expected {' or '.join(BATCH_STRATEGIES)}"
            )
        if settings.max_payload_mb * settings.max_concurrent_transforms > 100:
            raise SettingsError(
                f"{Env.MAX_PAYLOAD_MB}={settings.max_payload_mb} × {Env.MAX_CONCURRENT_TRANSFORMS}="
                f"{settings.max_concurrent_transforms} exceeds SageMaker's limit of 100: lower one of them"
            )
        if len({settings.input_prefix, settings.output_prefix, settings.errors_prefix, settings.manifest_prefix}) < 4:
            raise SettingsError(
                f"{Env.INPUT_PREFIX}, {Env.OUTPUT_PREFIX}, {Env.ERRORS_PREFIX} and {Env.MANIFEST_PREFIX} must differ"
            )
        for other in (settings.output_prefix, settings.errors_prefix, settings.manifest_prefix):
            if other.startswith(settings.input_prefix) or settings.input_prefix.startswith(other):
                raise SettingsError(
                    f"{Env.INPUT_PREFIX}={settings.input_prefix!r} overlaps {other!r}: outputs written there would "
                    "trigger new jobs; keep the prefixes disjoint"
                )
        return settings

    def target(self, instance_type: str) -> Target:
        return next(t for t in self.targets if t.instance_type == instance_type)


@dataclass(frozen=True, kw_only=True)
class OutcomeSettings(BucketSettings):
    """The job-outcome function's configuration, read once from its environment (``outcome_environment`` in
    ``stacks/batch_environment.py``)."""

    topic_arn: str
    # Not set by the stack (an operator may, on the function): outputs larger than this are published without their
    # records counted (0: never count). The contract's bound, no copy of a user setting.
    count_records_max_bytes: int = COUNT_RECORDS_MAX_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OutcomeSettings:
        raw_limit = env.get(Env.COUNT_RECORDS_MAX_BYTES, str(COUNT_RECORDS_MAX_BYTES))
        if not raw_limit.isdigit():
            raise SettingsError(
                f"{Env.COUNT_RECORDS_MAX_BYTES}={raw_limit!r}: expected a number of bytes (0 = never count)"
            )
        return cls(
            **_bucket_env(env),
            job_name_prefix=required_env(env, Env.JOB_NAME_PREFIX),
            topic_arn=required_env(env, Env.TOPIC_ARN),
            count_records_max_bytes=int(raw_limit),
        )
