"""Environment of the SageMaker model: how the Hugging Face container serves this workload.

Pure function, no AWS calls: the model construct passes the result as the model's ``Environment``. The names are
those read by the Hugging Face inference toolkit (``sagemaker_inference.parameters``), by Multi Model Server
(``MMS_*``, read because the toolkit's properties file sets ``enable_envvars_config=true``) and by our handler
(``model/code/inference.py``). See docs/handler.md for the reasoning behind each value.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

from stacks.config import GPU_FAMILIES, instance_family


def _handler_settings() -> ModuleType:
    """model/code/zstc_handler_settings.py: the handler's environment names and defaults, declared there once.

    Loaded by path because it ships inside the model (``code/``), not as a package of this app.
    """
    path = Path(__file__).resolve().parent.parent / "model" / "code" / "zstc_handler_settings.py"
    spec = importlib.util.spec_from_file_location("zstc_handler_settings", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load the handler settings from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HANDLER: Final = _handler_settings()
HANDLER_BATCH_SIZE_ENV: Final[str] = _HANDLER.ENV_BATCH_SIZE
HANDLER_TEMPLATE_ENV: Final[str] = _HANDLER.ENV_HYPOTHESIS_TEMPLATE
HANDLER_MAX_BATCH_TOKENS_ENV: Final[str] = _HANDLER.ENV_MAX_BATCH_TOKENS
DEFAULT_HYPOTHESIS_TEMPLATE: Final[str] = _HANDLER.DEFAULT_TEMPLATE
HANDLER_REJECTED_RECORD_FIELD: Final[str] = _HANDLER.REJECTED_RECORD_FIELD
DEFAULT_BATCH_SIZE: Final[int] = _HANDLER.DEFAULT_BATCH_SIZE
MAX_BATCH_TOKENS: Final[int] = _HANDLER.MAX_BATCH_TOKENS
# Padded tokens per forward pass on each GPU family (pairs x the longest pair of the batch). NOT measured here (no
# GPU was lent to this project's sessions): chosen where published encoder inference throughput of these GPUs
# stops growing with the batch (BERT-large-sized models, fp16: T4 / V100 ~8k tokens, A10G / L4 ~16k, L40S / A100 /
# H100 ~32k), far below their memory (a 16k-token bart-large pass needs ~0.2 GB of activations in float16).
# Re-measure with `make bench-handler` on the instance before relying on them.
GPU_BATCH_TOKENS: Final[dict[str, int]] = {
    "g4dn": 8192,  # NVIDIA T4, 16 GB
    "p3": 8192,  # V100, 16 GB
    "p3dn": 8192,  # V100, 32 GB
    "g5": 16384,  # A10G, 24 GB
    "g6": 16384,  # L4, 24 GB
    "gr6": 16384,  # L4, 24 GB
    "g6e": 32768,  # L40S, 48 GB
    "p4d": 32768,  # A100, 40 GB
    "p4de": 32768,  # A100, 80 GB
    "p5": 32768,  # H100, 80 GB
    "p5e": 32768,  # H200, 141 GB
    "p5en": 32768,  # H200, 141 GB
}


@dataclass(frozen=True)
class HandlerBatching:
    """How the handler batches (text, label) pairs on one instance family.

    ``batch_size``: pairs per forward pass (the CPU path: fixed pair batches, exact float32 scores).
    ``max_batch_tokens``: padded tokens per forward pass on GPU (pairs x longest pair), None on CPU; when set the
    handler batches by it instead of ``batch_size``.
    """

    batch_size: int
    max_batch_tokens: int | None


def default_batching(instance_type: str, *, batch_size: int = DEFAULT_BATCH_SIZE) -> HandlerBatching:
    """The handler's default batching for ``instance_type``'s family (one SageMaker model per image family).

    CPU families: ``batch_size`` pairs per forward pass (default 16, measured fastest for bart-large on CPU).
    GPU families: a token budget per forward pass from :data:`GPU_BATCH_TOKENS` (not measured here).
    """
    family = instance_family(instance_type)
    if family not in GPU_FAMILIES:
        return HandlerBatching(batch_size=batch_size, max_batch_tokens=None)
    tokens = GPU_BATCH_TOKENS.get(family)
    if tokens is None:
        raise ValueError(
            f"GPU family {family!r} of {instance_type!r} has no default token budget: add it to "
            "stacks/serving_env.py GPU_BATCH_TOKENS."
        )
    return HandlerBatching(batch_size=batch_size, max_batch_tokens=tokens)


def hypothesis_template_problem(template: str) -> str | None:
    """Why the handler would refuse ``template`` as its default hypothesis (None: it is fine)."""
    try:
        _HANDLER.template_parts(template)
    except ValueError as exc:
        return str(exc).split(": ")[0]
    return None


# Read by huggingface_hub (``constants.HF_HUB_OFFLINE``), which transformers 4.51.3 takes its offline mode from
# (``transformers.utils.hub``: ``_is_offline_mode = huggingface_hub.constants.HF_HUB_OFFLINE``); it reads neither
# variable itself, so the older ``TRANSFORMERS_OFFLINE`` (an alias huggingface_hub also accepts) adds nothing.
HUB_OFFLINE_ENV: Final = "HF_HUB_OFFLINE"

# Batch transform's MaxPayloadInMB is at most 100: accept any mini-batch it may send (default limit: 6.5 MB).
MAX_PAYLOAD_MB: Final = 100
# Answers repeat the text and add a score per label: for short texts with many one-letter labels a response can be
# ~6x its request. Multi Model Server's default response limit (6.5 MB) would fail such batches.
MAX_RESPONSE_BYTES: Final = 8 * MAX_PAYLOAD_MB * 1024 * 1024
_SIZE: Final = re.compile(r"^(?:(\d+)xlarge|xlarge|large|medium)$")
# GPUs per instance where it is not 1 (SageMaker instance types of the GPU families).
_GPUS: Final = {
    "g4dn.12xlarge": 4,
    "g5.12xlarge": 4,
    "g5.24xlarge": 4,
    "g5.48xlarge": 8,
    "g6.12xlarge": 4,
    "g6.24xlarge": 4,
    "g6.48xlarge": 8,
    "g6e.12xlarge": 4,
    "g6e.24xlarge": 4,
    "g6e.48xlarge": 8,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "p5.48xlarge": 8,
    "p5e.48xlarge": 8,
    "p5en.48xlarge": 8,
}


def vcpus(instance_type: str) -> int:
    """vCPUs of an ``ml.<family>.<size>`` instance: large 2, xlarge 4, Nxlarge 4N (medium: 2, the t2/t3 sizes)."""
    size = instance_type.split(".")[-1]
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(
            f"Instance type {instance_type!r} has a size this app does not know ({size!r}): "
            "use a SageMaker size such as ml.m5.xlarge or ml.g5.2xlarge."
        )
    if match.group(1):
        return 4 * int(match.group(1))
    return 4 if size == "xlarge" else 2


def gpus(instance_type: str) -> int:
    """GPUs of the instance: 0 for CPU families."""
    family = instance_family(instance_type)
    if family not in GPU_FAMILIES:
        return 0
    return _GPUS.get(instance_type.removeprefix("ml."), 1)


def serving_environment(
    *,
    instance_type: str,
    batch_size: int,
    timeout_seconds: int,
    hypothesis_template: str | None = None,
    max_batch_tokens: int | None = None,
    hub_offline: bool = False,
) -> dict[str, str]:
    """Environment variables of the SageMaker model for zero-shot classification with our handler.

    - One model server worker per GPU, or one on CPU: the handler batches (text, label) pairs itself, so a single
      worker keeps every core busy on a large request, and bart-large-mnli (1.6 GB) is loaded once.
    - Intra-op threads (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``) = physical cores per worker (vCPUs / 2:
      SageMaker's x86 instances run two hyper-threads per core, and a second thread per core does not speed up
      matrix products).
    - The model server's response timeout = ``timeout_seconds`` (the invocation timeout of the batch path), so a
      worker is never restarted before SageMaker gives up on the request.
    - Request limit 100 MB (batch transform's largest MaxPayloadInMB) and a response limit of 800 MB.
    - ``ZSTC_BATCH_SIZE`` = ``batch_size`` pairs per forward pass. Precision stays ``auto`` (float16 on GPU, float32
      on CPU: exact scores).
    - ``ZSTC_HYPOTHESIS_TEMPLATE`` = ``hypothesis_template`` when given: the template of records that give none
      (the handler's default, ``This example is {}.``, otherwise).
    - ``ZSTC_MAX_BATCH_TOKENS`` on GPU families: ``max_batch_tokens``, or the family's default
      (:func:`default_batching`); the handler then batches by padded tokens instead of ``batch_size`` pairs. Not set
      on CPU (fixed pair batches) unless ``max_batch_tokens`` is given.
    - ``HF_HUB_OFFLINE=1`` when ``hub_offline``: for a container that cannot reach the Hub (network isolation, or the
      VPC's isolated subnets) and loads the model from its artifact; transformers and huggingface_hub then never try
      the Hub (a lookup there would fail only after its network timeout). Not set otherwise.
    """
    if not instance_type.startswith("ml.") or instance_type.count(".") != 2:
        raise ValueError(f"Instance type {instance_type!r} is not a SageMaker instance type: use e.g. ml.m5.xlarge.")
    family = instance_family(instance_type)
    if family.startswith(("inf", "trn")):
        raise ValueError(
            f"Instance type {instance_type!r} is an AWS Neuron instance: this handler runs on CPU or GPU; "
            "choose e.g. ml.m5.xlarge or ml.g5.xlarge."
        )
    if not 1 <= batch_size <= 4096:
        raise ValueError(f"batch_size {batch_size} is out of range: use 1 to 4096 pairs per forward pass.")
    if not 1 <= timeout_seconds <= 3600:
        raise ValueError(f"timeout_seconds {timeout_seconds} is out of range: SageMaker allows 1 to 3600 seconds.")
    if max_batch_tokens is not None and not 1 <= max_batch_tokens <= MAX_BATCH_TOKENS:
        raise ValueError(
            f"max_batch_tokens {max_batch_tokens} is out of range: use 1 to {MAX_BATCH_TOKENS} tokens per forward pass."
        )
    if hypothesis_template is not None and (problem := hypothesis_template_problem(hypothesis_template)):
        raise ValueError(f"hypothesis_template {hypothesis_template!r} {problem}: give one {{}} where the label goes.")

    cpu_count = vcpus(instance_type)
    gpu_count = gpus(instance_type)
    workers = max(1, gpu_count)
    threads = max(1, cpu_count // 2 // workers)
    environment = {
        "HF_TASK": "zero-shot-classification",
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
        # Multi Model Server 1.1 reads default_response_timeout in minutes and default_response_timeout_seconds in
        # seconds (the latter wins): set both so the limit holds whichever the container's version reads.
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(math.ceil(timeout_seconds / 60)),
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": str(timeout_seconds),
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(MAX_PAYLOAD_MB),
        "MMS_MAX_RESPONSE_SIZE": str(MAX_RESPONSE_BYTES),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        HANDLER_BATCH_SIZE_ENV: str(batch_size),
    }
    if hypothesis_template is not None:
        environment[HANDLER_TEMPLATE_ENV] = hypothesis_template
    tokens = max_batch_tokens if max_batch_tokens is not None else default_batching(instance_type).max_batch_tokens
    if tokens is not None:
        environment[HANDLER_MAX_BATCH_TOKENS_ENV] = str(tokens)
    if hub_offline:
        environment[HUB_OFFLINE_ENV] = "1"
    return environment
