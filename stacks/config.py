"""The app's configuration: every setting is a CDK context value, read once here into a typed, validated object.

Each setting's default is declared once, as the :class:`Settings` field default (error messages quote it from
there); ``cdk.json`` lists every key with that value for the user to edit (a test keeps the two equal) and
``cdk deploy -c key=value`` overrides it. Values given on the command line arrive as strings, so every parser below
accepts both the JSON type and its string spelling (``"true"``, ``"2"``).
Nothing below ``app.py`` reads context: constructs receive a :class:`Settings`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

HEX40: Final = re.compile(r"^[0-9a-f]{40}$")
MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
INSTANCE_TYPE: Final = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
REGION: Final = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STACK_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
SECRET_NAME: Final = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
S3_URL: Final = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\.tar\.gz$")

ENDPOINT_MODES: Final = ("serverless", "provisioned", "none")
MODEL_SOURCES: Final = ("staged", "hub", "s3")

# Instance families with local instance (NVMe) storage: SageMaker rejects a volume size or KMS key on them ("Volume
# size/KMS key not supported for instance types with local instance storage"); the hardware encrypts that storage
# (AES-256) instead. The rule is the SageMaker Python SDK's own, followed exactly: ``volume_size_supported`` in
# aws/sagemaker-python-sdk, sagemaker-core/src/sagemaker/core/common_utils.py (sagemaker-core 2.27.0, the version
# requirements.txt pins; src/sagemaker/utils.py in SDK v2): a "d" anywhere in the family (c5d, c6id, g4dn, m5d,
# p3dn, p4d, p4de, r5d…) or a family starting with one of these prefixes. inf2 has no "d" and is EBS-only.
# tests/unit/config/test_nvme_rule.py checks this copy against the installed SDK on every instance type.
VOLUME_UNSUPPORTED_FAMILY_PREFIXES: Final = ("g5", "g6", "g7e", "p5", "p6-b200", "trn1", "trn2")
# Families that need the GPU build of the Hugging Face inference container.
GPU_FAMILIES: Final = frozenset({"g4dn", "g5", "g6", "g6e", "gr6", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en"})


class ConfigError(ValueError):
    """A context value is invalid. The message names the key, the bad value and a valid example."""


def instance_family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``."""
    return instance_type.split(".")[1]


def has_nvme_storage(instance_type: str) -> bool:
    """True when SageMaker refuses a volume KMS key on ``instance_type`` (the SDK's rule, see above).

    Only instances have a volume: a serverless endpoint's config always takes the stack key, which SageMaker uses for
    its copy of the container image (stacks/endpoint.py).
    """
    family = instance_family(instance_type)
    return "d" in family or family.startswith(VOLUME_UNSUPPORTED_FAMILY_PREFIXES)


def is_gpu(instance_type: str) -> bool:
    return instance_family(instance_type) in GPU_FAMILIES


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Typed, validated settings of one deployment. See the README's configuration table for each key."""

    stack_name: str = "ZeroShotClassification"
    region: str | None = None

    # The model
    model_id: str = "facebook/bart-large-mnli"
    model_revision: str = "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"
    model_source: str = "staged"
    model_data_url: str | None = None
    hf_token_secret: str | None = None
    inference_batch_size: int = 16
    # The deployment's default NLI hypothesis, used by records that give none (the handler's default; cdk.json).
    hypothesis_template: str = "This example is {}."

    # Real-time endpoint
    endpoint_mode: str = "serverless"
    endpoint_instance_type: str = "ml.m5.xlarge"
    endpoint_min_instances: int = 1
    endpoint_max_instances: int = 2
    endpoint_target_invocations: int = 120
    serverless_memory_mb: int = 6144
    serverless_max_concurrency: int = 5
    data_capture: bool = False
    data_capture_percent: int = 100

    # Batch path
    batch_instance_types: tuple[str, ...] = ("ml.m5.xlarge",)  # most preferred first (the trigger falls back in order)
    batch_instance_count: int = 1
    batch_window_seconds: int = 60
    batch_max_concurrent_jobs: int = 2
    batch_max_payload_mb: int = 1
    batch_model_timeout_seconds: int = 3600
    batch_model_retries: int = 1
    batch_patience_hours: int = 24

    # Network, data and operations
    vpc: bool = False
    retain_data: bool = True
    output_expiry_days: int = 0
    log_retention_days: int = 365
    alarm_email: str | None = None
    queue_age_alarm_minutes: int = 120
    endpoint_5xx_alarm_percent: float = 1.0
    endpoint_p99_latency_alarm_ms: int = 10000

    @property
    def has_endpoint(self) -> bool:
        return self.endpoint_mode != "none"

    @property
    def batch_instance_type(self) -> str:
        """The preferred (first) batch instance type."""
        return self.batch_instance_types[0]

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | Callable[[str], Any]) -> Settings:
        """Read and validate every key. ``context`` is a mapping or ``node.try_get_context``."""
        if isinstance(context, Mapping):
            _check_unknown_keys(context)
        get: Callable[[str], Any] = context.get if isinstance(context, Mapping) else context
        values: dict[str, Any] = {}
        for key, parse in _PARSERS.items():
            raw = get(key)
            if raw is None:
                continue
            values[key] = parse(key, raw)
        _apply_legacy_instance_type(get, values)
        settings = cls(**values)
        _check_combinations(settings)
        return settings


def _is_cdk_key(key: str) -> bool:
    """Context keys that belong to the CDK, not to this app: feature flags, CLI settings, cached lookups."""
    return key.startswith(("@", "aws:", "aws-cdk", "cdk")) or ":" in key


def _check_unknown_keys(context: Mapping[str, Any]) -> None:
    """A misspelled key would silently deploy the default: fail, naming the closest real key."""
    for key in sorted(context):
        if key in _PARSERS or key == LEGACY_BATCH_INSTANCE_TYPE or _is_cdk_key(key):
            continue
        close = difflib.get_close_matches(key, list(_PARSERS), n=1, cutoff=0.6)
        hint = f"Did you mean '{close[0]}'? e.g. -c {close[0]}=…" if close else "See the README's configuration table."
        raise ConfigError(f"Unknown context key '{key}' (value {context[key]!r}): this app has no such setting. {hint}")


# --- parsers: (key, raw) -> value, raising ConfigError with key, bad value and a valid example ---------------------


def _fail(key: str, raw: Any, expected: str, example: str) -> ConfigError:
    return ConfigError(f"Invalid value for '{key}': {raw!r}. Expected {expected}, e.g. -c {key}={example}")


def _string(pattern: re.Pattern[str], expected: str, example: str) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        if not isinstance(raw, str) or not pattern.match(raw):
            raise _fail(key, raw, expected, example)
        return raw

    return parse


def _optional(pattern: re.Pattern[str], expected: str, example: str) -> Callable[[str, Any], str | None]:
    inner = _string(pattern, expected, example)

    def parse(key: str, raw: Any) -> str | None:
        if raw in ("", False) or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        return inner(key, raw)

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        if raw not in options:
            raise _fail(key, raw, "one of " + " | ".join(options), options[0])
        return str(raw)

    return parse


def _default(key: str) -> Any:
    """The :class:`Settings` default of ``key`` (the one declaration of each default)."""
    return next(f.default for f in fields(Settings) if f.name == key)


def _integer(low: int, high: int, example: int | None = None) -> Callable[[str, Any], int]:
    """An integer in ``[low, high]``; error messages show ``example``, by default the setting's default."""

    def parse(key: str, raw: Any) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            value = int(raw.strip())
        if value is None or not low <= value <= high:
            shown = example if example is not None else _default(key)
            raise _fail(key, raw, f"an integer from {low} to {high}", str(shown))
        return value

    return parse


def _number(low: float, high: float, example: float | None = None) -> Callable[[str, Any], float]:
    """A number in ``[low, high]``; error messages show ``example``, by default the setting's default."""

    def parse(key: str, raw: Any) -> float:
        try:
            value = float(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not low <= value <= high:
            shown = example if example is not None else _default(key)
            raise _fail(key, raw, f"a number from {low:g} to {high:g}", f"{shown:g}")
        return value

    return parse


def _boolean(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise _fail(key, raw, "true or false", "true")


def _hypothesis_template(key: str, raw: Any) -> str:
    """A template with exactly one ``{}``, by the handler's own rule (model/code/zstc_handler_settings.py)."""
    from stacks.serving_env import hypothesis_template_problem  # imported late: serving_env imports this module

    problem = hypothesis_template_problem(raw) if isinstance(raw, str) else f"is a {type(raw).__name__}"
    if problem is not None:
        raise ConfigError(
            f"Invalid value for '{key}': {raw!r} {problem}. Give one {{}} where the label goes, "
            f'e.g. -c {key}="This example is {{}}." or -c {key}="この文章は{{}}に関するものです。"'
        )
    return raw


_INSTANCE = _string(INSTANCE_TYPE, "a SageMaker instance type starting with 'ml.'", "ml.m5.xlarge")

# The single-type key of earlier versions: still accepted (a list of one), but not together with the list.
LEGACY_BATCH_INSTANCE_TYPE: Final = "batch_instance_type"
MAX_BATCH_INSTANCE_TYPES: Final = 4
_TYPES_EXAMPLE: Final = "ml.g4dn.xlarge,ml.m5.xlarge"


def _is_unset(raw: Any) -> bool:
    return raw is None or raw == "" or raw == [] or (isinstance(raw, str) and raw.strip().lower() in ("", "none"))


def _instance_types(key: str, raw: Any) -> tuple[str, ...] | None:
    """An ordered list of instance types: a JSON list (cdk.json) or a comma-separated string (``-c``).

    Empty means "not set" (the default, ``ml.m5.xlarge``). Each type must be a SageMaker instance type the handler
    runs on (CPU or GPU, not AWS Neuron), listed once.
    """
    if _is_unset(raw):
        return None
    expected = (
        f"1 to {MAX_BATCH_INSTANCE_TYPES} SageMaker instance types, most preferred first, comma-separated "
        "(or a JSON list in cdk.json)"
    )
    if isinstance(raw, str):
        items: list[Any] = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise _fail(key, raw, expected, _TYPES_EXAMPLE)
    if not 1 <= len(items) <= MAX_BATCH_INSTANCE_TYPES:
        raise _fail(key, raw, expected, _TYPES_EXAMPLE)
    for item in items:
        if not isinstance(item, str) or not INSTANCE_TYPE.match(item):
            raise _fail(key, raw, f"{expected}; {item!r} is not one", _TYPES_EXAMPLE)
        if instance_family(item).startswith(("inf", "trn")):
            raise _fail(
                key,
                raw,
                f"{expected}; {item!r} is an AWS Neuron instance, which this handler cannot use",
                _TYPES_EXAMPLE,
            )
    if len(set(items)) != len(items):
        raise _fail(key, raw, f"{expected}, each listed once", _TYPES_EXAMPLE)
    return tuple(items)


def _apply_legacy_instance_type(get: Callable[[str], Any], values: dict[str, Any]) -> None:
    if values.get("batch_instance_types", ()) is None:  # empty in cdk.json: the default applies
        del values["batch_instance_types"]
    legacy = get(LEGACY_BATCH_INSTANCE_TYPE)
    if _is_unset(legacy):
        return
    if values.get("batch_instance_types") is not None:
        raise ConfigError(
            f"Both '{LEGACY_BATCH_INSTANCE_TYPE}' ({legacy!r}) and 'batch_instance_types' "
            f"({','.join(values['batch_instance_types'])!r}) are set. Keep only the list, most preferred first, "
            f"e.g. -c batch_instance_types={legacy},ml.m5.xlarge"
        )
    values["batch_instance_types"] = (_INSTANCE(LEGACY_BATCH_INSTANCE_TYPE, legacy),)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "stack_name": _string(
        STACK_NAME, "a CloudFormation stack name (letters, digits, hyphens)", "ZeroShotClassification"
    ),
    "region": _optional(REGION, "an AWS region name or empty for the CLI's region", "eu-west-1"),
    "model_id": _string(MODEL_ID, "a Hugging Face model id 'owner/name'", "facebook/bart-large-mnli"),
    "model_revision": _string(
        HEX40,
        "a 40-hex-digit commit of the model repository (not a branch or tag, which can move)",
        "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce",
    ),
    "model_source": _choice(MODEL_SOURCES),
    "model_data_url": _optional(S3_URL, "an s3:// URL of a model.tar.gz", "s3://my-bucket/models/model.tar.gz"),
    "hf_token_secret": _optional(SECRET_NAME, "a Secrets Manager secret name", "hf/token"),
    "inference_batch_size": _integer(1, 512),
    "hypothesis_template": _hypothesis_template,
    "endpoint_mode": _choice(ENDPOINT_MODES),
    "endpoint_instance_type": _INSTANCE,
    "endpoint_min_instances": _integer(1, 100),
    "endpoint_max_instances": _integer(1, 100),
    "endpoint_target_invocations": _integer(1, 100000),
    "serverless_memory_mb": _integer(1024, 6144),
    "serverless_max_concurrency": _integer(1, 200),
    "data_capture": _boolean,
    "data_capture_percent": _integer(1, 100),
    "batch_instance_types": _instance_types,
    "batch_instance_count": _integer(1, 100, 2),
    "batch_window_seconds": _integer(0, 300),
    "batch_max_concurrent_jobs": _integer(1, 100),
    "batch_max_payload_mb": _integer(1, 100),
    "batch_model_timeout_seconds": _integer(1, 3600),
    "batch_model_retries": _integer(0, 3),
    "batch_patience_hours": _integer(1, 336),
    "vpc": _boolean,
    "retain_data": _boolean,
    "output_expiry_days": _integer(0, 3650, 30),
    "log_retention_days": _integer(1, 3653),
    "alarm_email": _optional(EMAIL, "an e-mail address or empty", "ops@example.com"),
    "queue_age_alarm_minutes": _integer(1, 20160),
    "endpoint_5xx_alarm_percent": _number(0.01, 100),
    "endpoint_p99_latency_alarm_ms": _integer(1, 3600000),
}

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS: Final = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                              2557, 2922, 3288, 3653)  # fmt: skip


def _check_combinations(s: Settings) -> None:
    if s.serverless_memory_mb % 1024:
        raise _fail("serverless_memory_mb", s.serverless_memory_mb, "1024, 2048, 3072, 4096, 5120 or 6144", "6144")
    if s.log_retention_days not in LOG_RETENTION_DAYS:
        raise _fail(
            "log_retention_days", s.log_retention_days, "a CloudWatch Logs retention period (30, 90, 365, …)", "365"
        )
    if s.endpoint_min_instances > s.endpoint_max_instances:
        raise ConfigError(
            f"Invalid value for 'endpoint_min_instances': {s.endpoint_min_instances} is greater than "
            f"endpoint_max_instances={s.endpoint_max_instances}. Lower it or raise the maximum, "
            f"e.g. -c endpoint_min_instances=1 -c endpoint_max_instances={s.endpoint_max_instances}"
        )
    if s.vpc and s.endpoint_mode == "serverless":
        raise ConfigError(
            "Invalid value for 'vpc': True with endpoint_mode='serverless'. SageMaker serverless endpoints cannot "
            "run in a VPC. Use -c endpoint_mode=provisioned (or none) with -c vpc=true, or keep -c vpc=false"
        )
    if s.vpc and s.model_source == "hub":
        raise ConfigError(
            "Invalid value for 'model_source': 'hub' with vpc=true. The VPC has no internet egress, so the container "
            "cannot download the model from the Hugging Face Hub. Use -c model_source=staged (the default: the model "
            "is copied into the stack's bucket at deploy) or -c model_source=s3 -c model_data_url=s3://…/model.tar.gz"
        )
    if s.model_source == "s3" and not s.model_data_url:
        raise ConfigError(
            "Missing value for 'model_data_url': model_source='s3' needs the S3 URL of your model.tar.gz, "
            "e.g. -c model_data_url=s3://my-bucket/models/model.tar.gz"
        )
    if s.model_source != "s3" and s.model_data_url:
        raise ConfigError(
            f"Invalid value for 'model_data_url': {s.model_data_url!r} is only used with model_source='s3' "
            f"(model_source is {s.model_source!r}). Add -c model_source=s3 or remove model_data_url"
        )
