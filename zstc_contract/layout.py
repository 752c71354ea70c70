"""The data bucket's layout: its prefixes and how an input's output, status record and manifest are named.

``input/a/b.jsonl`` (relative key ``a/b.jsonl``) → output ``output/a/b.jsonl.out`` (named by SageMaker:
``<S3OutputPath><manifest entry>.out``), status record ``output/a/b.jsonl.status.json`` on success or
``errors/a/b.jsonl.status.json`` otherwise; job ``J``'s manifest is ``manifests/J.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Prefixes:
    """Disjoint key prefixes of the data bucket. Only ``input/`` starts work, so outputs can never trigger jobs."""

    input: str = "input/"
    output: str = "output/"
    errors: str = "errors/"
    models: str = "models/"
    manifests: str = "manifests/"
    capture: str = "capture/"


PREFIXES: Final = Prefixes()

INPUT_SUFFIX: Final = ".jsonl"  # only these objects start work
GZIP_INPUT_SUFFIX: Final = ".jsonl.gz"  # refused: the model handler reads uncompressed JSON Lines
OUTPUT_SUFFIX: Final = ".out"  # SageMaker appends it to every output object of a transform
STATUS_SUFFIX: Final = ".status.json"
MANIFEST_SUFFIX: Final = ".json"


def key_prefix(value: str) -> str:
    """``value`` as a key prefix: empty stays empty (the bucket's root), otherwise it ends in ``/``."""
    return value if not value or value.endswith("/") else value + "/"


def relative_key(key: str, input_prefix: str) -> str:
    """``input/a/b.jsonl`` → ``a/b.jsonl``: the name a manifest lists and outputs and status records keep."""
    if not key.startswith(input_prefix):
        raise ValueError(f"{key!r} is not under the input prefix {input_prefix!r}")
    return key[len(input_prefix) :]


def input_key(input_prefix: str, relative: str) -> str:
    return f"{input_prefix}{relative}"


def output_key(output_prefix: str, relative: str) -> str:
    """Where SageMaker writes a manifest entry's result: ``<output prefix><relative>.out``."""
    return f"{output_prefix}{relative}{OUTPUT_SUFFIX}"


def status_key(prefix: str, relative: str) -> str:
    """Key of a file's status record: ``<output or errors prefix><relative>.status.json``."""
    return f"{prefix}{relative}{STATUS_SUFFIX}"


def manifest_key(manifest_prefix: str, job_name: str) -> str:
    return f"{manifest_prefix}{job_name}{MANIFEST_SUFFIX}"
