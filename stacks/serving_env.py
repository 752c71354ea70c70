"""Placeholder until the handler engineer's version lands (same signature)."""

from __future__ import annotations


def serving_environment(*, instance_type: str, batch_size: int, timeout_seconds: int) -> dict[str, str]:
    return {
        "HF_TASK": "zero-shot-classification",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(timeout_seconds),
        "ZSTC_BATCH_SIZE": str(batch_size),
    }
