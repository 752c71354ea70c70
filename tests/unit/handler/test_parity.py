"""Property tests: our batched handler scores like transformers' zero-shot pipeline, on generated inputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOLERANCE = 1e-5
CHARACTERS = st.characters(blacklist_categories=("Cs",))  # lone surrogates cannot be sent as UTF-8
WORDS = st.sampled_from(
    ["health", "money", "run", "books", "</s>", "<s>", "<pad>", "café", "今年", "ジョギング", "🎉", "\n", "a", "{}"]
)
TEXTS = st.one_of(
    st.lists(WORDS, min_size=1, max_size=60).map(" ".join),
    st.text(CHARACTERS, min_size=1, max_size=400),
).filter(lambda text: text.strip())
LABELS = st.one_of(
    st.sampled_from(["health", "finance", "humor", "career", "健康", "family & friends"]),
    st.text(CHARACTERS, min_size=1, max_size=12).filter(lambda label: label.strip() and "," not in label),
)
TEMPLATES = st.sampled_from(["This example is {}.", "{}", "Es geht um {}.", "これは{}の話です。", "{} </s> {{x}}"])
RECORDS = st.fixed_dictionaries(
    {
        "inputs": TEXTS,
        "parameters": st.fixed_dictionaries(
            {
                "candidate_labels": st.lists(LABELS, min_size=1, max_size=6),
                "multi_label": st.booleans(),
                "hypothesis_template": TEMPLATES,
            }
        ),
    }
)


def assert_same_as_pipeline(answer, record, zero_shot_pipeline):
    parameters = record["parameters"]
    reference = zero_shot_pipeline(record["inputs"], **parameters)
    assert answer["sequence"] == reference["sequence"]
    assert len(answer["labels"]) == len(parameters["candidate_labels"])
    assert sorted(answer["labels"]) == sorted(reference["labels"])
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert abs(score - expected[label]) <= TOLERANCE, (label, score, expected[label])
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    gaps = [a - b for a, b in zip(reference["scores"], reference["scores"][1:], strict=False)]
    if all(gap > 2 * TOLERANCE for gap in gaps):
        assert answer["labels"] == reference["labels"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(RECORDS, min_size=1, max_size=5))
def test_json_lines_requests_score_like_the_pipeline(handler, loaded, zero_shot_pipeline, records):
    body = "\n".join(json.dumps(record) for record in records)
    text = handler.transform_fn(loaded, body, "application/jsonlines", "application/jsonlines")
    answers = [json.loads(line) for line in text.split("\n")]
    assert len(answers) == len(records)
    for answer, record in zip(answers, records, strict=True):
        assert_same_as_pipeline(answer, record, zero_shot_pipeline)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=RECORDS, batch_size=st.integers(min_value=1, max_value=9))
def test_scores_do_not_depend_on_the_batch_size(handler, loaded, zero_shot_pipeline, record, batch_size):
    original = loaded.batch_size
    loaded.batch_size = batch_size
    try:
        answer = json.loads(handler.transform_fn(loaded, json.dumps(record), "application/json", "application/json"))
    finally:
        loaded.batch_size = original
    assert_same_as_pipeline(answer, record, zero_shot_pipeline)


@pytest.mark.parametrize("multi_label", [False, True])
def test_real_tweets_score_like_the_pipeline(handler, loaded, zero_shot_pipeline, multi_label, resolution_tweets):
    labels = sorted({category for _, category in resolution_tweets})
    records = [
        {"inputs": text, "parameters": {"candidate_labels": labels, "multi_label": multi_label}}
        for text, _ in resolution_tweets[:40]
    ]
    body = "\n".join(json.dumps(record) for record in records)
    answers = [json.loads(line) for line in handler.transform_fn(loaded, body, "application/json", "*/*").split("\n")]
    for answer, record in zip(answers, records, strict=True):
        assert_same_as_pipeline(answer, record, zero_shot_pipeline)
