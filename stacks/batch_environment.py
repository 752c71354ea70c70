"""The one declaration of the batch functions' environment.

``stacks/batch.py`` calls these functions with the deployed resources' names (CloudFormation tokens); the offline
emulation (``zstc_local``) calls them with the emulated resources' names. Both therefore run the trigger and the
job-outcome function with exactly the same variables, derived from the same ``Settings`` (cdk.json context).
Plain Python (no constructs): the values may be tokens, passed through as strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from stacks.config import Settings
from stacks.pair_rates import batch_rate
from stacks.serving_env import HANDLER_REJECTED_RECORD_FIELD
from zstc_contract.backoff import backoff_max_seconds, receives_for_patience
from zstc_contract.function import METRICS_NAMESPACE as METRICS_NAMESPACE  # the functions' default too
from zstc_contract.layout import PREFIXES
from zstc_contract.settings import Env, Target

TRIGGER_TIMEOUT_SECONDS: Final = 120
OUTCOME_TIMEOUT_SECONDS: Final = 300
BACKOFF_BASE_SECONDS: Final = 60
# Each S3 event names one object; with a window, one Lambda batch (≤ 1,000 files) becomes one job.
BATCH_SIZE_WITH_WINDOW: Final = 1000
BATCH_SIZE_WITHOUT_WINDOW: Final = 10
# How long the trigger skips an instance type after SageMaker answered that its quota is too small for a job.
QUOTA_REFUSAL_TTL_SECONDS: Final = 6 * 3600
TRIGGER_SERVICE: Final = "batch-trigger"
OUTCOME_SERVICE: Final = "job-outcome"


@dataclass(frozen=True)
class BatchResources:
    """The names of the resources the batch functions use (deployed: tokens; emulated: real names)."""

    bucket_name: str
    claims_table_name: str
    queue_url: str
    topic_arn: str
    key_arn: str
    job_name_prefix: str


# What synthesis decided for one instance type batch jobs may run on (most preferred first): the trigger reads the
# same type back from BATCH_TARGETS, so the decision and its encoding are declared once, in the contract.
TargetDecision = Target


def _common(settings: Settings, resources: BatchResources, service: str) -> dict[str, str]:
    return {
        Env.BUCKET_NAME: resources.bucket_name,
        Env.INPUT_PREFIX: PREFIXES.input,
        Env.OUTPUT_PREFIX: PREFIXES.output,
        Env.ERRORS_PREFIX: PREFIXES.errors,
        Env.MANIFEST_PREFIX: PREFIXES.manifests,
        Env.JOB_NAME_PREFIX: resources.job_name_prefix,
        Env.METRICS_NAMESPACE: METRICS_NAMESPACE,
        Env.LOG_LEVEL: "INFO",
        Env.SERVICE_NAME: service,
    }


def queue_visibility_seconds(settings: Settings) -> int:
    """The batch queue's visibility timeout: 6 × the trigger's timeout + the batching window (the one derivation:
    the stack's queue and the emulated one read it)."""
    return 6 * TRIGGER_TIMEOUT_SECONDS + settings.batch_window_seconds


def max_receive_count(settings: Settings) -> int:
    """The queue's ``maxReceiveCount``: enough receives for ``batch_patience_hours`` of deferrals (the one
    derivation: the queue's redrive policy and the trigger's ``MAX_RECEIVE_COUNT`` both read it)."""
    patience = settings.batch_patience_hours * 3600
    return receives_for_patience(patience, base=BACKOFF_BASE_SECONDS, maximum=backoff_max_seconds(patience))


def with_pair_rate(settings: Settings, target: TargetDecision) -> TargetDecision:
    """``target`` with the pair rate of ``settings.model_id`` on its instance type (the table's, see
    ``stacks/pair_rates.py``); unchanged where a rate was already decided."""
    if target.pairs_per_second is not None:
        return target
    rate = batch_rate(settings, target.instance_type)
    if rate is None:
        return target
    return replace(target, pairs_per_second=round(rate.pairs_per_second, 3), tokens_per_pair=rate.tokens_per_pair)


def trigger_environment(
    settings: Settings,
    resources: BatchResources,
    targets: Sequence[TargetDecision],
    *,
    encode_json: Callable[[Any], str] = json.dumps,
) -> dict[str, str]:
    """The trigger function's environment. ``encode_json``: ``Stack.to_json_string`` where values are tokens."""
    patience = settings.batch_patience_hours * 3600
    return {
        **_common(settings, resources, TRIGGER_SERVICE),
        Env.CLAIMS_TABLE: resources.claims_table_name,
        Env.QUEUE_URL: resources.queue_url,
        # The trigger's choices, decided at synthesis: per instance type (most preferred first) the model of its
        # container family, the volume key (none on NVMe types, which SageMaker rejects it for) and the pair rate
        # of the configured model there, which sizes each job's mini-batches.
        Env.BATCH_TARGETS: encode_json([with_pair_rate(settings, t).to_json() for t in targets]),
        Env.QUOTA_REFUSAL_TTL_SECONDS: str(QUOTA_REFUSAL_TTL_SECONDS),
        Env.INSTANCE_COUNT: str(settings.batch_instance_count),
        Env.MAX_CONCURRENT_JOBS: str(settings.batch_max_concurrent_jobs),
        Env.MAX_PAYLOAD_MB: str(settings.batch_max_payload_mb),
        # One request at a time per instance: the model server runs one worker per GPU (one on CPU) that batches
        # the (text, label) pairs of a request itself; 1 × payload ≤ 100 always holds.
        Env.MAX_CONCURRENT_TRANSFORMS: "1",
        Env.MODEL_TIMEOUT_SECONDS: str(settings.batch_model_timeout_seconds),
        Env.MODEL_RETRIES: str(settings.batch_model_retries),
        Env.KMS_KEY_ARN: resources.key_arn,
        Env.BATCH_WINDOW_SECONDS: str(settings.batch_window_seconds),
        Env.MAX_FILES_PER_JOB: str(BATCH_SIZE_WITH_WINDOW),
        Env.CLAIM_TTL_SECONDS: str(patience + 7 * 86_400),
        Env.CLAIM_GRACE_SECONDS: str(TRIGGER_TIMEOUT_SECONDS + 60),
        Env.BACKOFF_BASE_SECONDS: str(BACKOFF_BASE_SECONDS),
        Env.BACKOFF_MAX_SECONDS: str(backoff_max_seconds(patience)),
        # model_source=hub serves the toolkit's stock handler, which takes one application/json record per request
        # (see docs/handler.md).
        Env.BATCH_STRATEGY: "SingleRecord" if settings.model_source == "hub" else "MultiRecord",
        # The last receive before the dead-letter queue: there the trigger writes each file's status and a notice.
        Env.MAX_RECEIVE_COUNT: str(max_receive_count(settings)),
        Env.TOPIC_ARN: resources.topic_arn,
        # Records larger than the payload limit are replaced by a rejection our handler answers with an error
        # record (the stock handler knows none: there such a record still fails its file).
        Env.REJECTED_RECORD_FIELD: "" if settings.model_source == "hub" else HANDLER_REJECTED_RECORD_FIELD,
    }


def outcome_environment(settings: Settings, resources: BatchResources) -> dict[str, str]:
    """The job-outcome function's environment."""
    return {**_common(settings, resources, OUTCOME_SERVICE), Env.TOPIC_ARN: resources.topic_arn}
