"""Token-budget batching (the GPU path), tested on CPU: batches respect the budget and scores do not change."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zstc_local.tiny_model import cached_tiny_architecture

LABELS = ["health", "finance", "humor", "career", "family", "education"]
TEXTS = [
    "save money",
    "I will run a marathon and eat better every single day of the year",
    "read " * 60,
    "a </s> inside",
    "今年こそは毎朝ジョギングをして、本をたくさん読みたい。",
    "learn to cook",
]


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=80),
    eos=st.lists(st.integers(min_value=0, max_value=2), min_size=80, max_size=80),
    budget=st.integers(min_value=1, max_value=5000),
)
def test_token_batches_cover_every_pair_once_within_the_budget(handler, lengths, eos, budget):
    eos_counts = eos[: len(lengths)]
    order = sorted(range(len(lengths)), key=lambda i: (eos_counts[i], lengths[i]))
    batches = list(handler._batches(order, lengths, eos_counts, 16, budget))
    assert [i for batch in batches for i in batch] == order  # every pair once, in sorted order
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # a pair longer than the budget runs alone
        assert len({eos_counts[i] for i in batch}) == 1  # BART's </s> guard still holds


@given(lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=80))
def test_without_a_budget_batches_are_fixed_pair_counts(handler, lengths):
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = list(handler._batches(order, lengths, [0] * len(lengths), 7, 0))
    assert [len(batch) for batch in batches[:-1]] == [7] * (len(batches) - 1)


def test_the_token_budget_fills_batches_with_more_short_pairs_than_long_ones(handler):
    lengths = [10] * 50 + [100] * 50
    batches = list(handler._batches(list(range(100)), lengths, [0] * 100, 16, 1000))
    assert [len(batch) for batch in batches] == [50, 10, 10, 10, 10, 10]


@pytest.fixture(scope="module", params=["bart", "bert"])
def model_and_pipeline(request, handler):
    from transformers import pipeline

    directory = str(cached_tiny_architecture(request.param))
    return handler.model_fn(directory), pipeline("zero-shot-classification", model=directory, device=-1)


def classify(handler, loaded, records):
    body = "\n".join(json.dumps(record) for record in records)
    return [json.loads(line) for line in handler.transform_fn(loaded, body, "application/jsonlines", None).split("\n")]


@settings(max_examples=8, deadline=None)
@given(budget=st.one_of(st.integers(min_value=1, max_value=4000), st.just(1_048_576)))
def test_scores_do_not_depend_on_the_token_budget(handler, model_and_pipeline, budget):
    loaded, reference = model_and_pipeline
    records = [
        {"inputs": text, "parameters": {"candidate_labels": LABELS[: 2 + i % 4], "multi_label": i % 2 == 1}}
        for i, text in enumerate(TEXTS)
    ]
    original = loaded.max_batch_tokens
    loaded.max_batch_tokens = budget
    try:
        answers = classify(handler, loaded, records)
    finally:
        loaded.max_batch_tokens = original
    for answer, record in zip(answers, records, strict=True):
        parameters = record["parameters"]
        expected = reference(record["inputs"], **parameters)
        scores = dict(zip(expected["labels"], expected["scores"], strict=True))
        for label, score in zip(answer["labels"], answer["scores"], strict=True):
            assert abs(score - scores[label]) <= 1e-5


def test_each_forward_pass_stays_within_the_token_budget(handler, model_and_pipeline, monkeypatch):
    loaded, _ = model_and_pipeline
    shapes = []
    forward = loaded.model.forward

    def recording_forward(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", recording_forward)
    monkeypatch.setattr(loaded, "max_batch_tokens", 1000)
    classify(handler, loaded, [{"inputs": text, "parameters": {"candidate_labels": LABELS}} for text in TEXTS])
    assert sum(rows for rows, _ in shapes) == len(TEXTS) * len(LABELS)  # no duplicate pairs here
    assert all(rows * width <= 1000 or rows == 1 for rows, width in shapes)
    assert max(rows for rows, _ in shapes) > loaded.batch_size  # short pairs: more than 16 per pass


def test_model_fn_reads_the_token_budget_and_defaults_to_pair_batches_on_cpu(handler, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("ZSTC_MAX_BATCH_TOKENS", raising=False)
    assert handler.model_fn(str(tiny_model_dir)).max_batch_tokens == 0
    monkeypatch.setenv("ZSTC_MAX_BATCH_TOKENS", "12000")
    assert handler.model_fn(str(tiny_model_dir)).max_batch_tokens == 12000


@pytest.mark.parametrize("raw", ["0", "lots", "99999999"])
def test_an_invalid_token_budget_fails_loading_with_the_fix(handler, tiny_model_dir, monkeypatch, raw):
    monkeypatch.setenv("ZSTC_MAX_BATCH_TOKENS", raw)
    with pytest.raises(ValueError, match=f"ZSTC_MAX_BATCH_TOKENS='{raw}' is invalid: set a whole number of tokens"):
        handler.model_fn(str(tiny_model_dir))


def test_handler_and_stack_share_the_token_budget_name(handler):
    from stacks.serving_env import HANDLER_MAX_BATCH_TOKENS_ENV

    assert handler.ENV_MAX_BATCH_TOKENS == HANDLER_MAX_BATCH_TOKENS_ENV == "ZSTC_MAX_BATCH_TOKENS"
