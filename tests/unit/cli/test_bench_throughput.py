"""`make bench-handler BENCH_ARGS=--write`: what it records in zstc/data/throughput.json, and what it keeps."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from zstc import models

REPO = Path(__file__).resolve().parents[3]
# The table's first entry as seeded (its field names are what other readers rely on) and an estimated GPU row.
SEED = {
    "shape": "bart-large",
    "hardware": "cpu",
    "cores": 2,
    "dtype": "float32",
    "handler": "zstc",
    "pairs_per_second": 5.8,
    "tokens_per_pair": 40.5,
    "labels": 10,
    "source": "measured",
    "machine": "2-core x86_64 (AVX2/FMA, no AVX-512), shared; real serving stack (toolkit + Multi Model Server)",
    "date": "2026-11-25",
    "command": "make bench-handler",
}
ESTIMATED = {**SEED, "hardware": "t4", "dtype": "float16", "source": "estimated", "pairs_per_second": 370.0}


@pytest.fixture
def bench(monkeypatch, tmp_path):
    """benchmarks/bench_handler.py as a module, writing into a copy of the real throughput table."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_handler", REPO / "benchmarks" / "bench_handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_handler", module)
    spec.loader.exec_module(module)
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"description": "test", "schema": 1, "entries": [dict(SEED), dict(ESTIMATED)]}))
    monkeypatch.setattr(module, "THROUGHPUT_FILE", table)
    monkeypatch.setattr(sys, "argv", ["bench_handler.py", "--write"])
    return module


def a_run(bench, shape: str, handler: str, seconds: float):
    return bench.Run(shape, 38.0, handler, 12, seconds, 2500.0, seconds * 2, [], 10)


def test_write_replaces_the_same_measurement_and_keeps_every_other_entry(bench):
    before = json.loads(bench.THROUGHPUT_FILE.read_text())["entries"]
    runs = [a_run(bench, "bart-large", "ours", 20.0), a_run(bench, "deberta-v3-base", "stock", 30.0)]

    bench.write_throughput(runs, argparse.Namespace(dtype=None))

    entries = json.loads(bench.THROUGHPUT_FILE.read_text())["entries"]
    ours = [e for e in entries if e["shape"] == "bart-large" and e["handler"] == "zstc" and e["hardware"] == "cpu"]
    assert len(ours) == 1  # the old bart-large / cpu / float32 / zstc row was replaced, not duplicated
    assert ours[0]["pairs_per_second"] == pytest.approx(12 * 10 / 20.0)
    assert ours[0]["pairs_per_cpu_second"] == pytest.approx(12 * 10 / 40.0)
    assert ours[0]["source"] == "measured" and ours[0]["command"] == "make bench-handler BENCH_ARGS=--write"
    assert set(SEED) <= set(ours[0])  # the existing field names stay (other readers rely on them)
    assert ESTIMATED in entries
    stock = [e for e in entries if e["handler"] == "stock"]
    assert [(e["shape"], e["run"]) for e in stock] == [("deberta-v3-base", ours[0]["run"])]
    assert len(entries) == len(before) - 1 + 2


def test_written_rates_give_the_relative_cost(bench):
    runs = [a_run(bench, "bart-large", "ours", 40.0), a_run(bench, "deberta-v3-large", "ours", 20.0)]

    bench.write_throughput(runs, argparse.Namespace(dtype=None))

    rows = models.throughput(bench.THROUGHPUT_FILE)
    assert models.relative_cost("deberta-v3-large", handler="zstc", entries=rows) == pytest.approx(0.5)


def test_published_entries_are_never_replaced(bench):
    data = json.loads(bench.THROUGHPUT_FILE.read_text())
    published = {**data["entries"][0], "source": "published", "pairs_per_second": 99.0}
    data["entries"].append(published)
    bench.THROUGHPUT_FILE.write_text(json.dumps(data))

    bench.write_throughput([a_run(bench, "bart-large", "ours", 20.0)], argparse.Namespace(dtype=None))

    assert published in json.loads(bench.THROUGHPUT_FILE.read_text())["entries"]


def test_our_handlers_row_comes_before_the_stock_and_forward_rows_of_a_shape(bench):
    ours = bench.throughput_entry(a_run(bench, "bart-large", "ours", 20.0), argparse.Namespace(dtype=None), "r", "d")
    bench.write_entries(
        [
            {"shape": "bart-large", "hardware": "cpu", "dtype": "float32", "handler": "forward", "run": "r2",
             "source": "measured", "pairs_per_second": 1.0},
            ours,
        ]
    )  # fmt: skip
    bench.write_throughput([a_run(bench, "bart-large", "stock", 90.0)], argparse.Namespace(dtype=None))

    rows = [e for e in json.loads(bench.THROUGHPUT_FILE.read_text())["entries"] if e.get("run")]
    assert [e["handler"] for e in rows if e["shape"] == "bart-large" and e["hardware"] == "cpu"] == [
        "zstc",
        "stock",
        "forward",
    ]
