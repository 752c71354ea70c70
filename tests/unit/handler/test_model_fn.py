"""model_fn: device, precision and batch size come from the environment."""

from __future__ import annotations

import json

import pytest

RECORD = {"inputs": "I will read more books", "parameters": {"candidate_labels": ["books", "money", "sport"]}}


def classify(handler, loaded):
    return json.loads(handler.transform_fn(loaded, json.dumps(RECORD), "application/json", "application/json"))


def test_defaults_are_float32_on_cpu_and_batch_size_16(handler, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("ZSTC_DTYPE", raising=False)
    monkeypatch.delenv("ZSTC_BATCH_SIZE", raising=False)
    loaded = handler.model_fn(str(tiny_model_dir))
    assert (loaded.dtype, loaded.batch_size, loaded.device.type) == ("float32", 16, "cpu")


def test_batch_size_comes_from_the_environment(handler, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("ZSTC_BATCH_SIZE", "7")
    assert handler.model_fn(str(tiny_model_dir)).batch_size == 7


def test_max_length_is_the_tokenizer_and_model_limit(handler, loaded):
    assert loaded.max_length == 128  # the tiny model's model_max_length and max_position_embeddings


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_on_cpu_classifies_with_close_scores(handler, tiny_model_dir, loaded, monkeypatch, dtype):
    monkeypatch.setenv("ZSTC_DTYPE", dtype)
    reduced = handler.model_fn(str(tiny_model_dir))
    assert reduced.dtype == dtype
    reference = classify(handler, loaded)
    answer = classify(handler, reduced)
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=0.1)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ZSTC_BATCH_SIZE", "0", "ZSTC_BATCH_SIZE='0' is invalid"),
        ("ZSTC_BATCH_SIZE", "many", "ZSTC_BATCH_SIZE='many' is invalid"),
        ("ZSTC_DTYPE", "float8", "use one of auto, float32"),
        ("ZSTC_DTYPE", "float16", "needs a GPU"),
    ],
)
def test_invalid_environment_fails_loading_with_the_fix(handler, tiny_model_dir, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        handler.model_fn(str(tiny_model_dir))
