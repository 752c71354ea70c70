"""``zstc estimate``: exact counts, the arithmetic of hours and dollars, sources, confirmation, the README table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from zstc import estimate as est
from zstc.errors import ZstcError
from zstc.inputs import Options, prepare

REPO = Path(__file__).resolve().parents[3]
SHARED_CSV = REPO.parent / "shared" / "data" / "new_years_resolutions_2015.csv"
CATEGORIES = (
    "Career,Education/Training,Family/Friends/Relationships,Finance,Health & Fitness,Humor,Personal Growth,"
    "Philanthropic,Recreation & Leisure,Time Management/Organization"
)

CPU_ROW = {
    "shape": "bart-large",
    "hardware": "cpu",
    "cores": 2,
    "dtype": "float32",
    "handler": "zstc",
    "pairs_per_second": 5.0,
    "tokens_per_pair": 40.0,
    "source": "measured",
    "machine": "test machine",
    "date": "2026-11-25",
}
PRICES = {
    "regions": {"us-east-1": {"ml.m5.xlarge": {"usd_per_hour": 0.2}, "ml.m5.2xlarge": {"usd_per_hour": 0.4}}},
    "job_startup": {"minutes": 6},
}


def counts_of(path: Path, **options) -> est.FileCounts:
    prepared = prepare(path, Options(**options))
    try:
        return est.count_prepared(prepared)
    finally:
        prepared.close()


def test_jsonl_counts_records_pairs_and_words_exactly(tmp_path):
    # Given three lines: command-line labels, its own labels and template, and a broken line
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"inputs": "run a marathon"}\n'
        '{"inputs": "save money now", "parameters": {"candidate_labels": ["Finance"], '
        '"hypothesis_template": "About {}."}}\n'
        "{not json\n",
        encoding="utf-8",
    )
    # When counted with two labels from the command line
    counts = counts_of(path, labels=("Health", "Career"))
    # Then: 3 records, one with a problem; pairs 2 + 1; words per pair = text + hypothesis
    assert (counts.records, counts.records_with_problems, counts.pairs) == (3, 1, 3)
    # line 1: 2 × (3 text words + 4 words of "This example is Health.") ; line 2: 3 + 2 ("About Finance.")
    assert counts.words == 2 * (3 + 4) + (3 + 2)
    assert counts.tokens == pytest.approx(3 * 4 + 19 * 1.82)


def test_csv_counts_rows_with_their_own_or_the_command_line_labels(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('text,labels\nhello world,"a,b,c"\n"multi\nline row",\n', encoding="utf-8")
    counts = counts_of(path, labels=("x",), label_column="labels")
    assert (counts.records, counts.pairs) == (2, 4)
    assert counts.words == 3 * (2 + 4) + (3 + 4)


def test_hours_and_dollars_follow_from_pairs_rate_tokens_and_price():
    # Given 36,000 pairs of exactly the measured tokens per pair (40 = 4 + 1.82 × words)
    words = round((40 - 4) / 1.82 * 36_000)
    counts = est.FileCounts(records=3600, pairs=36_000, words=words)
    result = est.estimate(
        counts, file="f", model="facebook/bart-large-mnli", instance_types=["ml.m5.xlarge"], region="us-east-1",
        entries=[CPU_ROW], prices=PRICES,
    )  # fmt: skip
    (row,) = result.types
    rate_scale = 40.0 / counts.tokens_per_pair
    assert row.pairs_per_second == pytest.approx(5.0 * rate_scale)
    assert row.compute_hours == pytest.approx(36_000 / (5.0 * rate_scale) / 3600)
    assert row.billed_instance_hours == pytest.approx(row.compute_hours + 0.1)  # 6 minutes of start-up
    assert row.dollars == pytest.approx(row.billed_instance_hours * 0.2)
    assert row.rate is not None and row.rate.source == "measured"


def test_longer_texts_take_proportionally_longer():
    short = est.FileCounts(records=1, pairs=100, words=1000)
    long = est.FileCounts(records=1, pairs=100, words=2000)
    kwargs = {"model": "facebook/bart-large-mnli", "instance_types": ["ml.m5.xlarge"], "region": "us-east-1"}
    a = est.estimate(short, file="s", entries=[CPU_ROW], prices=PRICES, **kwargs).types[0]
    b = est.estimate(long, file="l", entries=[CPU_ROW], prices=PRICES, **kwargs).types[0]
    assert b.compute_hours / a.compute_hours == pytest.approx(long.tokens / short.tokens)


def test_more_cores_are_an_estimate_and_gpu_without_figures_is_not_measured():
    counts = est.FileCounts(records=10, pairs=100, words=1000)
    result = est.estimate(
        counts, file="f", model="facebook/bart-large-mnli", instance_types=["ml.g5.xlarge", "ml.m5.2xlarge"],
        region="eu-west-1", entries=[CPU_ROW], prices=PRICES,
    )  # fmt: skip
    gpu, cpu = result.types
    assert gpu.rate is None and gpu.dollars is None and "not measured" in " ".join(gpu.notes)
    assert cpu.rate is not None and cpu.rate.source == "estimated" and "×4/2" in cpu.rate.basis
    assert cpu.rate.pairs_per_second == pytest.approx(10.0)
    # eu-west-1 has no price in the data: us-east-1's is used and said so
    assert "no price recorded for eu-west-1" in " ".join(cpu.notes)
    assert result.highest_dollars() == cpu.dollars


def test_a_model_outside_the_catalogue_falls_back_to_bart_large_with_a_note():
    result = est.estimate(
        est.FileCounts(records=1, pairs=1, words=5), file="f", model="someone/unknown", instance_types=["ml.m5.xlarge"],
        region="us-east-1", entries=[CPU_ROW], prices=PRICES,
    )  # fmt: skip
    assert result.shape == "bart-large" and "not in the model catalogue" in result.notes[0]


def test_several_instances_are_all_billed_for_a_single_file():
    counts = est.FileCounts(records=10, pairs=1000, words=10_000)
    kwargs = {"file": "f", "model": "facebook/bart-large-mnli", "instance_types": ["ml.m5.xlarge"]}
    one = est.estimate(counts, region="us-east-1", entries=[CPU_ROW], prices=PRICES, **kwargs).types[0]
    two = est.estimate(counts, region="us-east-1", instance_count=2, entries=[CPU_ROW], prices=PRICES, **kwargs)
    assert two.types[0].compute_hours == pytest.approx(one.compute_hours)
    assert two.types[0].dollars == pytest.approx(2 * one.dollars)
    assert "billed" in two.notes[0]


# --- confirmation before upload -------------------------------------------------------------------------------


def an_estimate(dollars_per_hour: float) -> est.Estimate:
    prices = {"regions": {"us-east-1": {"ml.m5.xlarge": {"usd_per_hour": dollars_per_hour}}}}
    return est.estimate(
        est.FileCounts(records=3600, pairs=36_000, words=712_088), file="f", model="facebook/bart-large-mnli",
        instance_types=["ml.m5.xlarge"], region="us-east-1", entries=[CPU_ROW], prices=prices,
    )  # fmt: skip


def test_a_costly_estimate_asks_and_a_no_stops_the_submission():
    asked = []
    with pytest.raises(ZstcError, match="--yes"):
        est.confirm_estimate(
            an_estimate(100.0), yes=False, console=Console(quiet=True), threshold_usd=10, ask=lambda q: asked.append(q)
        )
    assert len(asked) == 1 and "above $10.00" in asked[0]


def test_yes_or_a_cheap_estimate_does_not_ask():
    def never(question: str) -> bool:
        raise AssertionError("asked")

    est.confirm_estimate(an_estimate(100.0), yes=True, console=Console(quiet=True), threshold_usd=10, ask=never)
    est.confirm_estimate(an_estimate(0.01), yes=False, console=Console(quiet=True), threshold_usd=10, ask=never)
    est.confirm_estimate(
        an_estimate(100.0), yes=False, console=Console(quiet=True), threshold_usd=10, ask=lambda q: True
    )


# --- the real data ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason=f"{SHARED_CSV} is not on this machine")
def test_the_2015_resolutions_estimate_uses_this_machines_measured_cpu_throughput():
    counts = counts_of(SHARED_CSV, labels=tuple(CATEGORIES.split(",")))
    # 5,011 tweets (some span several lines), each with the 10 categories
    assert (counts.records, counts.records_with_problems, counts.pairs) == (5011, 0, 50_110)
    result = est.estimate(
        counts, file=SHARED_CSV.name, model="facebook/bart-large-mnli",
        instance_types=["ml.g4dn.xlarge", "ml.m5.xlarge"], region="us-east-1",
    )  # fmt: skip
    gpu, cpu = result.types
    measured = [e for e in json.loads(est.THROUGHPUT_FILE.read_text())["entries"] if e["source"] == "measured"]
    cpu_row = next(e for e in measured if e["shape"] == "bart-large" and e["hardware"] == "cpu")
    assert cpu.rate is not None and cpu.rate.source == "measured" and cpu_row["machine"] in cpu.rate.basis
    assert cpu.compute_hours == pytest.approx(
        50_110 / (cpu_row["pairs_per_second"] * cpu_row["tokens_per_pair"] / counts.tokens_per_pair) / 3600
    )
    assert cpu.dollars is not None and cpu.dollars > 0
    assert gpu.rate is None or gpu.rate.source != "measured" or gpu.rate.basis  # a GPU row says where it is from


BENCH_TOKENIZER = Path.home() / ".cache" / "zstc" / "models" / "bench-bart-large-tweets16000-v1"


@pytest.mark.skipif(
    not (SHARED_CSV.is_file() and BENCH_TOKENIZER.is_dir()), reason="needs the data set and the bench tokenizer"
)
def test_the_tokens_per_word_ratio_is_what_the_bench_tokenizer_gives_on_the_tweets():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(BENCH_TOKENIZER))
    prepared = prepare(SHARED_CSV, Options(labels=tuple(CATEGORIES.split(","))))
    texts = [r.text or "" for r in prepared.iter_records()][::10]  # every tenth tweet
    prepared.close()
    hypotheses = [est.DEFAULT_TEMPLATE.format(label) for label in CATEGORIES.split(",")]
    real = sum(len(tokenizer(t, h)["input_ids"]) for t in texts for h in hypotheses)
    words = sum(len(t.split()) + len(h.split()) for t in texts for h in hypotheses)
    pairs = len(texts) * len(hypotheses)
    assert (real - est.SPECIAL_TOKENS_PER_PAIR * pairs) / words == pytest.approx(est.TOKENS_PER_WORD, abs=0.05)


# --- the README -------------------------------------------------------------------------------------------------


def test_the_readme_cost_table_is_the_one_the_data_gives():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- costs:start -->\n(.*?)\n<!-- costs:end -->", readme, re.S)
    assert match, "README.md needs the generated cost table between <!-- costs:start --> and <!-- costs:end -->"
    assert match.group(1).strip() == est.cost_table_markdown().strip(), (
        "README cost table is stale: paste the output of `.venv/bin/python -m zstc.estimate`"
    )


def test_every_priced_instance_type_is_in_the_cost_table_with_its_source():
    table = est.cost_table_markdown()
    prices = json.loads(est.PRICES_FILE.read_text())
    for instance_type in prices["regions"]["us-east-1"]:
        assert f"`{instance_type}`" in table
    assert "measured" in table
    assert prices["verified_against_official_page"] is False  # the README says so; flip both when verified


def test_the_submit_check_estimates_the_prepared_file_for_the_configured_types(tmp_path):
    # Given a file and a threshold it exceeds (the configured default: ml.m5.xlarge, bart-large, measured here)
    path = tmp_path / "big.jsonl"
    path.write_text('{"inputs": "one two three"}\n' * 50, encoding="utf-8")
    prepared = prepare(path, Options(labels=("a", "b")))
    questions: list[str] = []
    check = est.confirm_before_upload(
        yes=False, console=Console(quiet=True), threshold_usd=0.0, ask=lambda q: questions.append(q)
    )

    class Stack:
        region = "us-east-1"

    # When the check runs before the upload, and the answer is no
    with pytest.raises(ZstcError, match="not submitted"):
        check(prepared, Stack())
    prepared.close()
    # Then it asked once, naming the dollars
    assert len(questions) == 1 and "$" in questions[0]


def test_zstc_estimate_is_a_command_of_the_cli(tmp_path):
    from typer.testing import CliRunner

    from zstc.cli import app

    path = tmp_path / "a.jsonl"
    path.write_text('{"inputs": "save money"}\n{"inputs": "run"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["estimate", str(path), "--labels", "x,y,z", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["records"], data["pairs"]) == (2, 6)
    assert [t["instance_type"] for t in data["instance_types"]] == ["ml.m5.xlarge"]
    assert data["instance_types"][0]["rate"]["source"] == "measured"


def test_without_the_apps_configuration_submit_goes_on_without_an_estimate(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_text('{"inputs": "x"}\n', encoding="utf-8")
    prepared = prepare(path, Options(labels=("a",)))

    def no_checkout() -> None:
        raise ZstcError("stacks not found: run it from a checkout")

    monkeypatch.setattr(est, "configured", no_checkout)
    console = Console(record=True, width=200)
    est.confirm_before_upload(yes=False, console=console, threshold_usd=0.0, ask=lambda q: False)(prepared, None)
    prepared.close()
    assert "No cost estimate: stacks not found" in console.export_text()


def test_without_a_terminal_a_costly_estimate_needs_yes(monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ZstcError, match="no terminal to confirm it: pass --yes"):
        est.confirm_estimate(an_estimate(100.0), yes=False, console=Console(quiet=True), threshold_usd=10)
