"""Adversarial records (issue 13): each ends as that record's error object, the other records are classified."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

LABELS = ["health", "finance", "humor"]
GOOD = json.dumps({"id": "good", "inputs": "I will save money", "parameters": {"candidate_labels": LABELS}})


def run(handler, loaded, lines: list[str]):
    """transform_fn on raw JSON Lines; the response must be encodable as UTF-8 (as the toolkit sends it)."""
    text = handler.transform_fn(loaded, "\n".join(lines), "application/jsonlines", "application/jsonlines")
    text.encode("utf-8")
    return [json.loads(line) for line in text.split("\n")]


def assert_error_then_good(answers, message):
    assert len(answers) == 2
    assert set(answers[0]) == {"error"}, answers[0]
    assert message in answers[0]["error"]
    assert answers[1]["id"] == "good" and "labels" in answers[1]


# --- ids --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw_id", "message"),
    [
        ("NaN", '"id" is nan'),
        ("Infinity", '"id" is inf'),
        ("-Infinity", '"id" is -inf'),
        ("1e999", '"id" is inf'),
        ('"\\ud800"', '"id" contains an unpaired surrogate'),
        ('"a\\udfff"', '"id" contains an unpaired surrogate'),
        ("true", '"id" is True'),
        ("null", '"id" is None'),
        ('{"a": 1}', '"id" is dict'),
        ("[1, 2]", '"id" is list'),
    ],
)
def test_an_id_that_cannot_be_echoed_is_that_records_error(handler, loaded, raw_id, message):
    line = '{"id": ' + raw_id + ', "inputs": "text", "parameters": {"candidate_labels": ["a", "b"]}}'
    assert_error_then_good(run(handler, loaded, [line, GOOD]), message)


@pytest.mark.parametrize("good_id", ['"tweet-1"', "42", "-7", "3.25", "123456789012345678901234567890", '"日本"'])
def test_string_integer_and_finite_number_ids_are_echoed(handler, loaded, good_id):
    line = '{"id": ' + good_id + ', "inputs": "text", "parameters": {"candidate_labels": ["a", "b"]}}'
    [answer] = run(handler, loaded, [line])
    assert answer["id"] == json.loads(good_id)


def test_nan_elsewhere_in_a_record_does_not_reach_the_answer(handler, loaded):
    line = '{"inputs": "text", "meta": NaN, "parameters": {"candidate_labels": ["a"]}}'
    [answer] = run(handler, loaded, [line])
    assert "labels" in answer


# --- strings the answer could not carry -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"inputs": "bad \\ud800 text", "parameters": {"candidate_labels": ["a"]}}', '"inputs" contains an unpaired'),
        ('{"inputs": ["ok", "\\udc00"], "parameters": {"candidate_labels": ["a"]}}', '"inputs"[1] contains'),
        ('{"inputs": "t", "parameters": {"candidate_labels": ["a", "\\ud83d"]}}', "candidate_labels[1] contains"),
        ('{"inputs": "t", "parameters": {"candidate_labels": "a, \\ud83d"}}', "candidate_labels contains"),
        ('{"inputs": "t", "parameters": {"candidate_labels": ["a"], "hypothesis_template": "{} \\ud800"}}', "template"),
        ('{"sequences": "\\ud800", "candidate_labels": ["a"]}', '"sequences" contains an unpaired surrogate'),
    ],
)
def test_lone_surrogates_are_that_records_error(handler, loaded, record, message):
    assert_error_then_good(run(handler, loaded, [record, GOOD]), message)


def test_a_surrogate_pair_escape_is_a_real_character_and_is_classified(handler, loaded):
    [answer] = run(handler, loaded, ['{"inputs": "party \\ud83c\\udf89", "parameters": {"candidate_labels": ["a"]}}'])
    assert answer["sequence"] == "party 🎉"


# --- nesting ----------------------------------------------------------------------------------------------------
def test_deep_nesting_on_one_line_is_that_lines_error(handler, loaded):
    deep = '{"inputs": "t", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_error_then_good(run(handler, loaded, [deep, GOOD]), "Line 1 is nested too deeply")


def test_a_deeply_nested_single_document_gets_an_error_object(handler, loaded):
    deep = "[" * 100_000 + "]" * 100_000
    answer = json.loads(handler.transform_fn(loaded, deep, "application/json", "application/json"))
    assert "nested too deeply" in answer["error"]


# --- templates, labels, sizes -------------------------------------------------------------------------------------
def test_a_format_spec_template_is_refused_without_allocating_it(handler, loaded):
    line = json.dumps(
        {"inputs": "t", "parameters": {"candidate_labels": ["a"] * 50, "hypothesis_template": "{:>10000000}"}}
    )
    tracemalloc.start()
    try:
        answers = run(handler, loaded, [line, GOOD])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error_then_good(answers, "hypothesis_template '{:>10000000}' cannot be formatted")
    assert peak < 20 * 1024 * 1024  # str.format would build 50 strings of 10 MB


def test_a_template_longer_than_the_limit_is_refused(handler, loaded):
    line = json.dumps(
        {"inputs": "t", "parameters": {"candidate_labels": ["a"], "hypothesis_template": "{}" + "x" * 2000}}
    )
    assert_error_then_good(run(handler, loaded, [line, GOOD]), "2002 characters long: keep it under 1024")


def test_a_label_longer_than_the_limit_is_refused(handler, loaded):
    line = json.dumps({"inputs": "t", "parameters": {"candidate_labels": ["ok", "y" * 5000]}})
    assert_error_then_good(run(handler, loaded, [line, GOOD]), "candidate_labels[1] is 5000 characters long")


def test_too_many_texts_times_labels_in_one_record_is_refused_with_the_counts(handler, loaded):
    line = json.dumps({"inputs": ["t"] * 101, "parameters": {"candidate_labels": [f"l{i}" for i in range(100)]}})
    assert_error_then_good(
        run(handler, loaded, [line, GOOD]), "101 text(s) x 100 label(s) = 10100 pairs: at most 10000"
    )


def test_a_huge_text_is_cut_before_tokenizing_and_scores_like_the_pipeline(
    handler, loaded, zero_shot_pipeline, monkeypatch
):
    # Given a 200 KB text and many labels (tokenized in full once per label, it would cost gigabytes)
    text = "I will run a marathon, eat better and save money this year. " * 3400
    assert len(text) > 200_000
    tokenizer = type(loaded.tokenizer)
    original = tokenizer.__call__
    longest = []

    def recording(self, first, *args, **kwargs):
        longest.append(max(len(item) for item in ([first] if isinstance(first, str) else first)))
        return original(self, first, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "__call__", recording)
    started = time.perf_counter()
    [answer] = run(handler, loaded, [json.dumps({"inputs": text, "parameters": {"candidate_labels": LABELS * 30}})])
    elapsed = time.perf_counter() - started
    monkeypatch.setattr(tokenizer, "__call__", original)
    # Then the tokenizer never sees more than the character bound, the answer echoes the whole text
    assert max(longest) <= handler.CHARS_PER_TOKEN * loaded.max_length
    assert answer["sequence"] == text
    assert elapsed < 30  # generous: it is well under a second on the build machine
    # And the scores are the pipeline's on the full text
    [small] = run(handler, loaded, [json.dumps({"inputs": text, "parameters": {"candidate_labels": LABELS}})])
    reference = zero_shot_pipeline(text, candidate_labels=LABELS)
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(small["labels"], small["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=1e-5)


def test_a_text_of_mostly_whitespace_is_not_cut_short(handler):
    from transformers import pipeline

    from zstc_local.tiny_model import cached_tiny_architecture

    # Given a WordPiece tokenizer (whitespace makes no tokens) and a text whose words start after 20,000 spaces
    directory = str(cached_tiny_architecture("bert"))
    loaded = handler.model_fn(directory)
    text = " " * 20_000 + "run a marathon " * 200
    assert loaded.tokenizer(text[: handler.CHARS_PER_TOKEN * loaded.max_length])["input_ids"] == [
        loaded.tokenizer.cls_token_id,
        loaded.tokenizer.sep_token_id,
    ]
    # When it is classified, the cut grows until the text fills the model: the words count, as with the pipeline
    [answer] = run(handler, loaded, [json.dumps({"inputs": text, "parameters": {"candidate_labels": LABELS}})])
    reference = pipeline("zero-shot-classification", model=directory, device=-1)(text, candidate_labels=LABELS)
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=1e-5)


# --- failures inside the handler --------------------------------------------------------------------------------
def test_out_of_memory_on_a_large_batch_is_recovered_by_splitting_it(handler, loaded, zero_shot_pipeline, monkeypatch):
    import torch

    forward = loaded.model.forward

    def small_batches_only(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", small_batches_only)
    texts = ["save money", "run every day", "read more books", "learn to cook"]
    lines = [
        json.dumps({"id": i, "inputs": t, "parameters": {"candidate_labels": LABELS}}) for i, t in enumerate(texts)
    ]
    answers = run(handler, loaded, lines)
    monkeypatch.setattr(loaded.model, "forward", forward)
    for text, answer in zip(texts, answers, strict=True):
        reference = zero_shot_pipeline(text, candidate_labels=LABELS)
        expected = dict(zip(reference["labels"], reference["scores"], strict=True))
        for label, score in zip(answer["labels"], answer["scores"], strict=True):
            assert score == pytest.approx(expected[label], abs=1e-5)


def test_a_pair_that_runs_out_of_memory_alone_is_its_records_error(handler, loaded, monkeypatch):
    import torch

    forward = loaded.model.forward

    def long_pairs_fail(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 60:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", long_pairs_fail)
    long_line = json.dumps({"id": "long", "inputs": "word " * 200, "parameters": {"candidate_labels": LABELS}})
    answers = run(handler, loaded, [long_line, GOOD])
    assert answers[0]["id"] == "long"
    assert "The model failed on this record (OutOfMemoryError: CUDA out of memory)" in answers[0]["error"]
    assert "labels" in answers[1]


def test_an_answer_that_cannot_be_written_is_that_records_error(handler, loaded, monkeypatch):
    original = handler._result

    def unwritable(record, text, scores):
        result = original(record, text, scores)
        if text == "poison":
            result["sequence"] = object()  # not JSON serializable
        return result

    monkeypatch.setattr(handler, "_result", unwritable)
    line = json.dumps({"id": 1, "inputs": "poison", "parameters": {"candidate_labels": LABELS}})
    answers = run(handler, loaded, [line, GOOD])
    assert answers[0] == {"id": 1, "error": "This record's answer could not be written as JSON (TypeError): report it."}
    assert "labels" in answers[1]


def test_an_unexpected_exception_while_reading_a_record_is_its_error(handler, loaded, monkeypatch):
    original = handler._parameters

    def broken(value):
        if value.get("inputs") == "poison":
            raise KeyError("boom")
        return original(value)

    monkeypatch.setattr(handler, "_parameters", broken)
    line = json.dumps({"inputs": "poison", "parameters": {"candidate_labels": LABELS}})
    assert_error_then_good(run(handler, loaded, [line, GOOD]), "This record could not be read (KeyError)")


def test_chunks_are_bounded_by_tokens_and_answers_keep_their_order(handler, loaded, monkeypatch, zero_shot_pipeline):
    # Given chunks of at most 300 tokens (each record's pairs alone are more)
    monkeypatch.setattr(handler, "CHUNK_TOKENS", 300)
    runs = []
    original = handler._logits

    def counting(loaded_model, pairs):
        runs.append(sum(len(pair.ids) for pair in pairs))
        return original(loaded_model, pairs)

    monkeypatch.setattr(handler, "_logits", counting)
    texts = [f"resolution number {i}: " + "read books " * (i % 7) for i in range(12)]
    lines = [
        json.dumps({"id": i, "inputs": t, "parameters": {"candidate_labels": LABELS}}) for i, t in enumerate(texts)
    ]
    answers = run(handler, loaded, lines)
    assert len(runs) > 1
    assert [answer["id"] for answer in answers] == list(range(12))
    reference = zero_shot_pipeline(texts[11], candidate_labels=LABELS)
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answers[11]["labels"], answers[11]["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=1e-5)
