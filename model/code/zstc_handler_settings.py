"""The handler's settings contract: environment variable names, defaults and the hypothesis-template rule.

Standard library only, so it is imported by the handler in the container (``code/`` is on ``sys.path`` there) and
loaded by the CDK app at synth (``stacks/serving_env.py`` reads this file by path): each name and default is
declared here once.
"""

from __future__ import annotations

import string
from typing import Final

# Environment of the SageMaker model, read by model/code/inference.py.
ENV_BATCH_SIZE: Final = "ZSTC_BATCH_SIZE"
ENV_MAX_BATCH_TOKENS: Final = "ZSTC_MAX_BATCH_TOKENS"
ENV_DTYPE: Final = "ZSTC_DTYPE"
ENV_HYPOTHESIS_TEMPLATE: Final = "ZSTC_HYPOTHESIS_TEMPLATE"

DEFAULT_BATCH_SIZE: Final = 16  # pairs per forward pass on CPU (fastest for bart-large on 2 cores, docs/handler.md)
MAX_BATCH_SIZE: Final = 4096
# Padded tokens per forward pass on GPU (pairs x longest pair of the batch), when the environment sets none.
DEFAULT_GPU_BATCH_TOKENS: Final = 16384
MAX_BATCH_TOKENS: Final = 1_048_576
DEFAULT_TEMPLATE: Final = "This example is {}."
# Longest hypothesis_template accepted (characters). SageMaker limits a model environment value to 1024 characters.
MAX_TEMPLATE_CHARS: Final = 1024
SUPPORTED_ARCHITECTURES_FILE: Final = "supported_architectures.json"
# A record holding this key is one the batch trigger took out of its file before the transform (it was larger than
# the job's payload limit): the handler answers it with {"id": ..., "error": <its value>} and runs nothing.
REJECTED_RECORD_FIELD: Final = "zstc_rejected"


def template_parts(template: str) -> tuple[str, str]:
    """``(before, after)`` around the template's one ``{}``: the hypothesis of ``label`` is ``before + label + after``.

    Equal to ``template.format(label)`` for every template accepted (``{{`` / ``}}`` are literal braces, ``{0}`` is
    accepted like ``{}``), but never evaluates a format spec or a field name: ``{:>10000000}`` is refused instead
    of allocating 10 MB per label. Raises ``ValueError`` with what is wrong and how to fix it.
    """
    example = f'e.g. "{DEFAULT_TEMPLATE}"'
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"is {len(template)} characters long: keep it under {MAX_TEMPLATE_CHARS}, {example}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"cannot be formatted ({exc}): use exactly one {{}} and double other braces, {example}"
        ) from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    if not fields:
        raise ValueError(f"has no {{}}: put {{}} where the label goes, {example}")
    if len(fields) > 1 or fields[0][0] not in ("", "0") or fields[0][1] or fields[0][2]:
        raise ValueError(
            "cannot be formatted (it needs exactly one plain {}, without a name, format spec or conversion): "
            f"use exactly one {{}} where the label goes and double other braces, {example}"
        )
    before: list[str] = []
    after: list[str] = []
    seen = False
    for literal, name, _, _ in parsed:
        (after if seen else before).append(literal)
        if name is not None:
            seen = True
    return "".join(before), "".join(after)
