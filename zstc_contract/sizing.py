"""How a transform job batches records so that every invocation finishes well inside its timeout.

SageMaker sends a MultiRecord mini-batch of up to ``MaxPayloadInMB`` of lines per invocation and fails the object
when an invocation outlives ``InvocationsTimeoutInSeconds`` (at most 3,600 s). How long a mini-batch takes depends
on the hardware and the model (pairs per second: ``zstc/data/throughput.json``, decided per instance type at
synthesis) and on the file (records per MB, texts and labels per record, text length: sampled from its first
lines). This module turns those into the job's ``BatchStrategy`` and ``MaxPayloadInMB``:

- MultiRecord with the largest payload (whole MB, at least 1 and at least the job's largest record, at most the
  configured one) whose expected time stays under a quarter of the timeout;
- otherwise SingleRecord: one record per invocation, the payload limit unchanged;
- a warning when even one record of the sample cannot finish within the timeout.

Standard library only: used by the trigger (shipped in the contract layer), the local transform runner and tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

MULTI_RECORD: Final = "MultiRecord"
SINGLE_RECORD: Final = "SingleRecord"
# An invocation is planned to take at most this share of the timeout: room for slower instances, longer texts
# than sampled, cold caches and the model server's own overhead.
BUDGET_FRACTION: Final = 0.25
SAMPLE_BYTES: Final = 256 * 1024  # read from the start of each sampled file
SAMPLE_FILES: Final = 16  # files sampled per job (the densest sets the job's batching)
CHARS_PER_TOKEN: Final = 4.0  # English text under BPE / SentencePiece vocabularies, roughly (an approximation)
TEMPLATE_TOKENS: Final = 6  # "This example is {}." and the special tokens around the pair
MB: Final = 1024 * 1024
# SageMaker does not say whether MaxPayloadInMB's MB is 10^6 or 2^20 bytes: a record (with its newline) of at most
# this many bytes per MB fits under either reading.
RECORD_BYTES_PER_MB: Final = 1_000_000


def record_limit_bytes(max_payload_mb: int) -> int:
    """The largest record (line with its newline, bytes) a job of ``MaxPayloadInMB`` = ``max_payload_mb`` takes."""
    return max_payload_mb * RECORD_BYTES_PER_MB


@dataclass(frozen=True)
class FileSample:
    """What the first lines of a file say about its cost: records, bytes and pair-equivalents."""

    records: int = 0
    bytes: int = 0
    # Pairs weighted by their length relative to the rate table's pairs (a pair twice as long counts twice).
    weighted_pairs: float = 0.0
    largest_record_weighted_pairs: float = 0.0

    @property
    def weighted_pairs_per_mb(self) -> float:
        return self.weighted_pairs * MB / self.bytes if self.bytes else 0.0


def _labels_of(record: dict[str, Any]) -> list[str]:
    parameters = record.get("parameters")
    value = parameters.get("candidate_labels") if isinstance(parameters, dict) else record.get("candidate_labels")
    if isinstance(value, str):
        return [label for label in value.split(",") if label.strip()]
    if isinstance(value, list):
        return [label for label in value if isinstance(label, str)]
    return []


def _texts_of(record: dict[str, Any]) -> list[str]:
    value = record.get("inputs", record.get("sequences"))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for text in value if isinstance(text, str)]
    return []


def record_weighted_pairs(record: Any, *, tokens_per_pair: float) -> float:
    """The cost of one record in rate-table pairs: texts × labels, each pair weighted by its estimated tokens."""
    if not isinstance(record, dict):
        return 0.0  # an error record: answered without running the model
    labels, texts = _labels_of(record), _texts_of(record)
    if not labels or not texts:
        return 0.0
    label_tokens = sum(len(label) for label in labels) / CHARS_PER_TOKEN / len(labels)
    total = 0.0
    for text in texts:
        tokens = len(text) / CHARS_PER_TOKEN + label_tokens + TEMPLATE_TOKENS
        total += len(labels) * max(1.0, tokens / tokens_per_pair)
    return total


def sample_lines(head: bytes, *, complete: bool, tokens_per_pair: float) -> FileSample:
    """A :class:`FileSample` of the complete lines in ``head`` (the first bytes of a file; ``complete`` when it is
    the whole file, otherwise its last, possibly cut, line is left out). Lines that are not JSON objects count
    their bytes but no pairs (the handler answers them with an error record)."""
    lines = head.split(b"\n")
    if not complete:
        lines = lines[:-1]
    records, size, pairs, largest = 0, 0, 0.0, 0.0
    for line in lines:
        size += len(line) + 1
        if not line.strip():
            continue
        records += 1
        try:
            record = json.loads(line)
        except ValueError:
            continue
        weight = record_weighted_pairs(record, tokens_per_pair=tokens_per_pair)
        pairs += weight
        largest = max(largest, weight)
    return FileSample(records=records, bytes=size, weighted_pairs=pairs, largest_record_weighted_pairs=largest)


@dataclass(frozen=True)
class Batching:
    """The batching of one transform job and why."""

    strategy: str
    max_payload_mb: int
    expected_seconds: float | None  # of the longest planned invocation; None without a pair rate
    budget_seconds: float
    reason: str
    warning: str | None = None  # set when even one sampled record cannot finish within the timeout


def choose_batching(
    samples: Iterable[FileSample],
    *,
    pairs_per_second: float | None,
    timeout_seconds: int,
    max_payload_mb: int,
    multi_record: bool = True,
    largest_record_bytes: int = 0,
) -> Batching:
    """The strategy and payload for a job whose files were sampled as ``samples`` (see the module docstring).

    ``pairs_per_second``: the rate-table figure for the job's instance type and model (None: not known, the
    configured payload is kept). ``multi_record``: False where the serving handler takes one record per request
    (the toolkit's stock handler). ``largest_record_bytes``: the job's largest record (line and newline) that runs,
    as the trigger read it: a MultiRecord payload is never smaller than it (SageMaker fails a file holding a record
    larger than the payload), a job that would need a smaller one runs SingleRecord.
    """
    sampled: Sequence[FileSample] = [s for s in samples if s.records]
    budget = timeout_seconds * BUDGET_FRACTION
    if not multi_record:
        return Batching(SINGLE_RECORD, max_payload_mb, None, budget, "the stock handler takes one record per request")
    if not pairs_per_second or pairs_per_second <= 0 or not sampled:
        why = "no pair rate for this instance type and model" if sampled else "no records sampled"
        return Batching(MULTI_RECORD, max_payload_mb, None, budget, f"{why}: the configured payload is kept")
    density = max(s.weighted_pairs_per_mb for s in sampled)
    worst_record = max(s.largest_record_weighted_pairs for s in sampled)
    single_seconds = worst_record / pairs_per_second
    warning = None
    if single_seconds > timeout_seconds:
        warning = (
            f"a sampled record needs about {single_seconds:,.0f} s at {pairs_per_second:g} pairs/s, more than the "
            f"{timeout_seconds} s invocation timeout: it will fail; split its texts or labels over several records, "
            "or use a faster instance type"
        )
    smallest_mb = max(1, -(-largest_record_bytes // RECORD_BYTES_PER_MB))  # ceil: the largest record must fit
    for mb in range(max_payload_mb, smallest_mb - 1, -1):
        seconds = density * mb / pairs_per_second
        if seconds <= budget:
            return Batching(
                MULTI_RECORD,
                mb,
                seconds,
                budget,
                f"a {mb} MB mini-batch ({density * mb:,.0f} pairs) takes about {seconds:,.0f} s at "
                f"{pairs_per_second:g} pairs/s, within a quarter of the {timeout_seconds} s timeout",
                warning,
            )
    seconds = density * smallest_mb / pairs_per_second
    return Batching(
        SINGLE_RECORD,
        max_payload_mb,
        single_seconds,
        budget,
        f"a {smallest_mb} MB mini-batch ({density * smallest_mb:,.0f} pairs) would take about {seconds:,.0f} s at "
        f"{pairs_per_second:g} pairs/s, over a quarter of the {timeout_seconds} s timeout"
        + (f" (its largest record, {largest_record_bytes:,} bytes, needs {smallest_mb} MB)" if smallest_mb > 1 else "")
        + f": one record per invocation (the longest sampled takes about {single_seconds:,.1f} s)",
        warning,
    )
