"""Mini-batch sizing (zstc_contract.sizing): the rule, and the default configuration on the 2015 tweets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from zstc_contract.sizing import (
    MB,
    MULTI_RECORD,
    RECORD_BYTES_PER_MB,
    SAMPLE_BYTES,
    SINGLE_RECORD,
    FileSample,
    choose_batching,
    record_limit_bytes,
    record_weighted_pairs,
    sample_lines,
)

SHARED_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"
LABELS = [
    "Health & Fitness", "Personal Growth", "Finance", "Career", "Education/Training", "Family/Friends/Relationships",
    "Recreation & Leisure", "Time Management/Organization", "Philanthropic", "Humor",
]  # fmt: skip
# The bart-large rows of zstc/data/throughput.json: measured on 2 cores (ml.m5.xlarge has 2 physical cores), and the
# T4 (ml.g4dn.xlarge) figure estimated from a published one.
BART_LARGE_CPU_PAIRS_PER_SECOND = 4.144
BART_LARGE_T4_PAIRS_PER_SECOND = 370.0
TOKENS_PER_PAIR = 36.1


def tweets_jsonl() -> bytes:
    with SHARED_CSV.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = [
        json.dumps({"id": str(i), "inputs": row["text"], "parameters": {"candidate_labels": LABELS}})
        for i, row in enumerate(rows)
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def test_the_default_1_mb_cpu_mini_batch_would_outlive_the_timeout_so_records_go_one_by_one():
    data = tweets_jsonl()
    sample = sample_lines(data[:SAMPLE_BYTES], complete=False, tokens_per_pair=TOKENS_PER_PAIR)
    # About 3,000 tweets per MB at 10 labels each: ~30,000 pairs in a 1 MB mini-batch
    records_per_mb = sample.records * 1024 * 1024 / sample.bytes
    assert 2_500 < records_per_mb < 4_000
    batching = choose_batching(
        [sample], pairs_per_second=BART_LARGE_CPU_PAIRS_PER_SECOND, timeout_seconds=3600, max_payload_mb=1
    )
    one_mb_seconds = sample.weighted_pairs_per_mb / BART_LARGE_CPU_PAIRS_PER_SECOND
    assert one_mb_seconds > 3600  # the old default: the mini-batch times out, is retried, the file fails
    assert batching.strategy == SINGLE_RECORD
    assert batching.expected_seconds is not None and batching.expected_seconds < 3600 / 4
    assert batching.warning is None


def test_a_gpu_keeps_multi_record_mini_batches():
    data = tweets_jsonl()
    sample = sample_lines(data[:SAMPLE_BYTES], complete=False, tokens_per_pair=TOKENS_PER_PAIR)
    batching = choose_batching(
        [sample], pairs_per_second=BART_LARGE_T4_PAIRS_PER_SECOND, timeout_seconds=3600, max_payload_mb=6
    )
    assert batching.strategy == MULTI_RECORD
    assert 1 <= batching.max_payload_mb <= 6
    assert batching.expected_seconds is not None and batching.expected_seconds <= 900
    # the largest payload that fits: one more MB would not
    assert sample.weighted_pairs_per_mb * (batching.max_payload_mb + 1) / BART_LARGE_T4_PAIRS_PER_SECOND > 900 or (
        batching.max_payload_mb == 6
    )


def test_the_payload_shrinks_to_the_largest_whole_mb_within_a_quarter_of_the_timeout():
    sample = FileSample(records=1000, bytes=1024 * 1024, weighted_pairs=10_000, largest_record_weighted_pairs=10)
    batching = choose_batching([sample], pairs_per_second=25.0, timeout_seconds=3600, max_payload_mb=5)
    # 10,000 pairs per MB at 25 pairs/s: 400 s per MB; the budget is 900 s → 2 MB
    assert (batching.strategy, batching.max_payload_mb) == (MULTI_RECORD, 2)
    assert batching.expected_seconds == pytest.approx(800)


def test_the_densest_file_of_a_job_decides():
    light = FileSample(records=10, bytes=1024 * 1024, weighted_pairs=100, largest_record_weighted_pairs=10)
    dense = FileSample(records=10, bytes=1024 * 1024, weighted_pairs=100_000, largest_record_weighted_pairs=10)
    assert (
        choose_batching([light], pairs_per_second=10, timeout_seconds=3600, max_payload_mb=1).strategy == MULTI_RECORD
    )
    assert (
        choose_batching([light, dense], pairs_per_second=10, timeout_seconds=3600, max_payload_mb=1).strategy
        == SINGLE_RECORD
    )


def test_a_record_that_cannot_finish_even_alone_is_warned_about():
    huge = FileSample(records=1, bytes=500_000, weighted_pairs=50_000, largest_record_weighted_pairs=50_000)
    batching = choose_batching([huge], pairs_per_second=4.0, timeout_seconds=3600, max_payload_mb=1)
    assert batching.strategy == SINGLE_RECORD
    assert batching.warning is not None and "3600 s invocation timeout" in batching.warning


def test_without_a_rate_or_for_the_stock_handler_the_configuration_stands():
    sample = FileSample(records=1, bytes=100, weighted_pairs=2, largest_record_weighted_pairs=2)
    unknown = choose_batching([sample], pairs_per_second=None, timeout_seconds=3600, max_payload_mb=3)
    assert (unknown.strategy, unknown.max_payload_mb, unknown.expected_seconds) == (MULTI_RECORD, 3, None)
    stock = choose_batching([sample], pairs_per_second=10, timeout_seconds=3600, max_payload_mb=3, multi_record=False)
    assert stock.strategy == SINGLE_RECORD


def test_the_cut_last_line_of_a_sample_is_left_out_and_bad_lines_cost_nothing():
    head = b'{"inputs": "a", "parameters": {"candidate_labels": ["x", "y"]}}\nnot json\n{"inputs": "b", "param'
    sample = sample_lines(head, complete=False, tokens_per_pair=36.0)
    assert sample.records == 2
    assert sample.weighted_pairs == 2  # the valid record's two short pairs; the bad line runs no model


def test_long_texts_weigh_more_than_the_rate_tables_pairs():
    short = {"inputs": "tiny", "candidate_labels": "a, b"}  # JumpStart form, labels as a comma-separated string
    long = {"inputs": "word " * 400, "parameters": {"candidate_labels": ["a", "b"]}}
    assert record_weighted_pairs(short, tokens_per_pair=36.0) == 2
    assert record_weighted_pairs(long, tokens_per_pair=36.0) == pytest.approx(2 * (2000 / 4 + 0.25 + 6) / 36, rel=0.01)
    assert record_weighted_pairs(["not", "an object"], tokens_per_pair=36.0) == 0


def test_synthesis_decides_each_instance_types_rate_from_the_one_table():
    from stacks.config import Settings
    from stacks.pair_rates import batch_rate
    from zstc_contract.rates import read_entries

    settings = Settings()
    cpu = batch_rate(settings, "ml.m5.xlarge")  # 4 vCPUs = 2 physical cores, as measured
    assert cpu is not None and cpu.source == "measured"
    measured = next(
        e for e in read_entries() if e["shape"] == "bart-large" and e["hardware"] == "cpu" and e["source"] == "measured"
    )
    assert cpu.pairs_per_second == measured["pairs_per_second"]
    bigger = batch_rate(settings, "ml.c5.4xlarge")  # 8 physical cores: scaled, so marked estimated
    assert bigger is not None and bigger.source == "estimated"
    assert bigger.pairs_per_second == 4 * cpu.pairs_per_second
    assert batch_rate(settings, "ml.g5.xlarge") is None  # no A10G figure in the table: not guessed


def test_a_multi_record_payload_is_never_smaller_than_the_jobs_largest_record():
    # Given a fast instance (the T4 rate) and sparse records: every payload from 6 MB down would do on time
    sample = FileSample(records=100, bytes=MB, weighted_pairs=100.0, largest_record_weighted_pairs=1.0)
    free = choose_batching(
        [sample], pairs_per_second=BART_LARGE_T4_PAIRS_PER_SECOND, timeout_seconds=3600, max_payload_mb=6
    )
    assert (free.strategy, free.max_payload_mb) == (MULTI_RECORD, 6)
    # When the budget allows only 2 MB but the job holds a record of 3,000,001 bytes (4 MB under the 10^6 reading)
    dense = FileSample(records=100, bytes=MB, weighted_pairs=200_000.0, largest_record_weighted_pairs=1.0)
    rate = 200_000.0 * 2.5 / 900  # 2 MB fits a quarter of 3,600 s, 3 MB does not
    small = choose_batching([dense], pairs_per_second=rate, timeout_seconds=3600, max_payload_mb=6)
    assert (small.strategy, small.max_payload_mb) == (MULTI_RECORD, 2)
    big = choose_batching(
        [dense],
        pairs_per_second=rate,
        timeout_seconds=3600,
        max_payload_mb=6,
        largest_record_bytes=3 * RECORD_BYTES_PER_MB + 1,
    )
    # Then no MultiRecord payload both fits the record and the budget: one record per invocation, the configured
    # payload kept (it holds every record that runs), and the reason names the record
    assert (big.strategy, big.max_payload_mb) == (SINGLE_RECORD, 6)
    assert "3,000,001 bytes" in big.reason and "needs 4 MB" in big.reason
    # And a record that fits the budget's payload changes nothing
    fits = choose_batching(
        [dense], pairs_per_second=rate, timeout_seconds=3600, max_payload_mb=6, largest_record_bytes=2 * 10**6
    )
    assert (fits.strategy, fits.max_payload_mb) == (MULTI_RECORD, 2)


def test_the_record_limit_holds_under_either_reading_of_mb():
    assert record_limit_bytes(1) == 1_000_000 <= MB
    assert record_limit_bytes(100) == 100 * RECORD_BYTES_PER_MB
