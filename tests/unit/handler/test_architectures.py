"""Every supported architecture scores like transformers' zero-shot pipeline (tiny random-weight models, float32).

One tiny model per architecture (zstc_local.tiny_model), each with its family's tokenizer trained on English + Japanese
and the label layout of a real NLI checkpoint of that family (3-class in several orders and letter cases, 2-class).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from zstc_local.tiny_model import ARCHITECTURES, cached_tiny_architecture

TOLERANCE = 1e-5
LABELS = ["health", "finance", "humor", "career"]
JAPANESE_TEMPLATE = "この文章は{}に関するものです。"
JAPANESE_TEXT = "日本代表がワールドカップの初戦で勝利した。毎日野菜を食べて、よく眠るようにしています。"
JAPANESE_LABELS = ["スポーツ", "政治", "経済", "健康"]


@pytest.fixture(scope="session")
def models(handler):
    """(handler model, pipeline) per architecture, built and loaded once per session."""
    from transformers import pipeline

    cache: dict[str, tuple] = {}

    def get(architecture: str):
        if architecture not in cache:
            directory = str(cached_tiny_architecture(architecture))
            loaded = handler.model_fn(directory)
            loaded.batch_size = 3  # requests span several batches
            reference = pipeline("zero-shot-classification", model=directory, device=-1)
            if reference.tokenizer.model_max_length > 1_000_000:
                # A tokenizer config without model_max_length: the pipeline would not truncate at all (and fail on
                # a long text); compare with the pipeline truncating where the handler does.
                reference.tokenizer.model_max_length = loaded.max_length
            cache[architecture] = (loaded, reference)
        return cache[architecture]

    return get


def classify(handler, loaded, records):
    body = "\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    text = handler.transform_fn(loaded, body, "application/jsonlines", "application/jsonlines")
    return [json.loads(line) for line in text.split("\n")]


def assert_same_as_pipeline(answer, reference):
    assert answer["sequence"] == reference["sequence"]
    assert sorted(answer["labels"]) == sorted(reference["labels"])
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert abs(score - expected[label]) <= TOLERANCE, (label, score, expected[label])
    assert answer["scores"] == sorted(answer["scores"], reverse=True)


def request(text, labels, **parameters):
    return {"inputs": text, "parameters": {"candidate_labels": labels, **parameters}}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_single_label_multi_label_and_one_label_records_score_like_the_pipeline(handler, models, architecture):
    loaded, reference = models(architecture)
    text = "I will run a marathon and save money for a new bike"
    records = [
        request(text, LABELS),
        request(text, LABELS, multi_label=True),
        request(text, ["health"]),
        request(text, ["health"], multi_label=True),
    ]
    answers = classify(handler, loaded, records)
    assert_same_as_pipeline(answers[0], reference(text, candidate_labels=LABELS))
    assert_same_as_pipeline(answers[1], reference(text, candidate_labels=LABELS, multi_label=True))
    assert_same_as_pipeline(answers[2], reference(text, candidate_labels=["health"]))
    assert_same_as_pipeline(answers[3], reference(text, candidate_labels=["health"], multi_label=True))
    assert abs(sum(answers[0]["scores"]) - 1.0) < 1e-5


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_json_lines_with_different_label_sets_per_line_score_like_the_pipeline(handler, models, architecture):
    loaded, reference = models(architecture)
    lines = [
        ("save money </s> every month", ["finance", "health"], {}),
        ("learn to cook", ["education", "leisure", "food", "family"], {"multi_label": True}),
        ("eat better", LABELS, {"hypothesis_template": "About {}"}),
        ("run every morning", ["sport", "sport", "work"], {}),  # duplicate labels share probability
    ]
    answers = classify(handler, loaded, [request(text, labels, **extra) for text, labels, extra in lines])
    for answer, (text, labels, extra) in zip(answers, lines, strict=True):
        assert_same_as_pipeline(answer, reference(text, candidate_labels=labels, **extra))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_text_longer_than_the_model_is_truncated_like_the_pipeline(handler, models, architecture):
    loaded, reference = models(architecture)
    text = "New year, new me: read more books and run every morning. " * 40  # far beyond 128 tokens
    [answer] = classify(handler, loaded, [request(text, LABELS)])
    assert answer["sequence"] == text
    assert_same_as_pipeline(answer, reference(text, candidate_labels=LABELS))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_japanese_text_labels_and_template_score_like_the_pipeline(handler, models, architecture):
    loaded, reference = models(architecture)
    tokens = loaded.tokenizer.tokenize(JAPANESE_TEXT)
    assert tokens.count(loaded.tokenizer.unk_token) < len(tokens) / 4  # the tokenizer knows Japanese
    [answer] = classify(
        handler, loaded, [request(JAPANESE_TEXT, JAPANESE_LABELS, hypothesis_template=JAPANESE_TEMPLATE)]
    )
    expected = reference(JAPANESE_TEXT, candidate_labels=JAPANESE_LABELS, hypothesis_template=JAPANESE_TEMPLATE)
    assert_same_as_pipeline(answer, expected)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_model_gets_exactly_the_tokenizers_inputs_and_use_cache_only_where_it_takes_it(models, architecture):
    loaded, reference = models(architecture)
    assert loaded.input_names == tuple(reference.tokenizer.model_input_names)
    makes_token_types = architecture in ("bert", "electra", "albert", "mobilebert", "deberta-v2")
    assert ("token_type_ids" in loaded.input_names) is makes_token_types
    assert loaded.use_cache is (architecture == "bart")  # only the encoder-decoder forward takes use_cache
    assert loaded.eos_pooled is (architecture == "bart")  # the </s> batching guard only for BART's head


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_entailment_and_contradiction_ids_are_the_pipelines(models, architecture):
    loaded, reference = models(architecture)
    assert loaded.entailment_id == reference.entailment_id
    last = loaded.model.config.num_labels - 1
    assert loaded.contradiction_id == (last if reference.entailment_id == 0 else 0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_length_limit_is_what_the_model_really_takes(handler, models, architecture):
    # Given each tiny model has 128 usable positions (RoBERTa / XLM-R: max_position_embeddings 130, offset 2;
    # XLM-R and DeBERTa-v2 tokenizer configs without model_max_length)
    loaded, _ = models(architecture)
    assert loaded.max_length == 128
    # When a pair of exactly that length runs, it is classified (a 130-token one would raise IndexError)
    words = "resolution " * 300
    ids = loaded.tokenizer(words, "This example is health.", truncation="only_first", max_length=128)["input_ids"]
    assert len(ids) == 128
    [answer] = classify(handler, loaded, [request(words, ["health", "money"])])
    assert "labels" in answer


def test_xlm_roberta_positions_offset_leaves_two_fewer_usable_positions(handler, models):
    loaded, _ = models("xlm-roberta")
    assert loaded.model.config.max_position_embeddings == 130
    assert loaded.tokenizer.model_max_length > 1_000_000  # the tokenizer config says nothing
    assert handler.position_limit(loaded.model) == 128


def test_bert_token_types_change_the_scores_so_passing_them_matters(handler, models):
    # Given BERT's pair encoding marks the hypothesis with token type 1
    loaded, reference = models("bert")
    text = "I will run a marathon and save money"
    [answer] = classify(handler, loaded, [request(text, LABELS)])
    assert_same_as_pipeline(answer, reference(text, candidate_labels=LABELS))
    # When the same pairs run without token types (all 0), the scores differ by far more than the tolerance
    import torch

    encoded = loaded.tokenizer([text] * 4, [f"This example is {label}." for label in LABELS], return_tensors="pt")
    with torch.inference_mode():
        with_types = loaded.model(**encoded).logits[:, loaded.entailment_id].softmax(-1).numpy()
        encoded["token_type_ids"] = torch.zeros_like(encoded["token_type_ids"])
        without = loaded.model(**encoded).logits[:, loaded.entailment_id].softmax(-1).numpy()
    assert np.abs(with_types - without).max() > 100 * TOLERANCE
    expected = dict(zip(LABELS, with_types.tolist(), strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert abs(score - expected[label]) <= TOLERANCE


def test_a_text_with_eos_tokens_does_not_break_a_bart_batch(handler, models):
    loaded, reference = models("bart")
    texts = ["plain text", "a </s> in the middle", "two </s></s> and <s>", "another plain one"]
    answers = classify(handler, loaded, [request(text, LABELS) for text in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert_same_as_pipeline(answer, reference(text, candidate_labels=LABELS))


@pytest.mark.parametrize("architecture", ["bert", "xlm-roberta"])
def test_a_pair_the_model_fails_on_ends_as_that_records_error_and_the_others_are_classified(
    handler, models, architecture, monkeypatch
):
    # Given a model whose forward pass fails whenever a batch holds the poisoned record's pairs
    loaded, reference = models(architecture)
    texts = ["save money", "zebra zebra zebra", "run every day", "read books"]
    tokenize = loaded.tokenizer
    others = {i for text in [*texts[:1], *texts[2:]] for i in tokenize(text, "This example is health.")["input_ids"]}
    poison = next(i for i in tokenize(texts[1], add_special_tokens=False)["input_ids"] if i not in others)
    forward = loaded.model.forward

    def failing_forward(*args, **kwargs):
        if (kwargs["input_ids"] == poison).any():
            raise IndexError("index out of range in self")
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", failing_forward)
    # When they share one request (and batches)
    answers = classify(handler, loaded, [{**request(text, LABELS), "id": i} for i, text in enumerate(texts)])
    # Then only the poisoned record gets an error, with the reason; the others match the pipeline
    assert [answer["id"] for answer in answers] == [0, 1, 2, 3]
    assert set(answers[1]) == {"id", "error"}
    assert "IndexError" in answers[1]["error"]
    monkeypatch.setattr(loaded.model, "forward", forward)
    for i in (0, 2, 3):
        assert_same_as_pipeline(answers[i], reference(texts[i], candidate_labels=LABELS))


def test_an_exception_while_tokenizing_one_record_ends_as_its_error(handler, models, monkeypatch):
    loaded, _ = models("deberta-v2")
    tokenizer = loaded.tokenizer
    original = type(tokenizer).__call__

    def flaky(self, text, *args, **kwargs):
        if any("boom" in item for item in text):
            raise RuntimeError("tokenizer crashed")
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", flaky)
    answers = classify(handler, loaded, [request("boom", LABELS), request("fine", LABELS)])
    assert "could not be tokenized (RuntimeError)" in answers[0]["error"]
    assert "labels" in answers[1]


def test_batches_are_padded_on_the_right_with_the_tokenizers_pad_id_even_if_it_says_left(handler, tmp_path):
    import shutil

    from transformers import pipeline

    # Given an XLM-R model whose tokenizer config says padding_side=left (its head reads the first token)
    model_dir = tmp_path / "left"
    shutil.copytree(cached_tiny_architecture("xlm-roberta"), model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    loaded = handler.model_fn(str(model_dir))
    assert loaded.tokenizer.padding_side == "left"
    reference = pipeline("zero-shot-classification", model=str(model_dir), device=-1)
    seen = []
    forward = loaded.model.forward

    def recording(*args, **kwargs):
        seen.append(kwargs["input_ids"].clone())
        return forward(*args, **kwargs)

    loaded.model.forward = recording
    texts = ["save money", "I will run a marathon and eat better every day", "read"]
    answers = classify(handler, loaded, [request(text, LABELS) for text in texts])
    # Then every row starts with <s> (padding, with the tokenizer's pad id, is on the right) and the scores are the
    # pipeline's (padded on the left, this model's scores moved by 0.44)
    assert all(int(row[0]) == loaded.tokenizer.cls_token_id for batch in seen for row in batch)
    assert any(int(row[-1]) == loaded.tokenizer.pad_token_id == 1 for batch in seen for row in batch)
    for text, answer in zip(texts, answers, strict=True):
        reference.tokenizer.model_max_length = loaded.max_length
        assert_same_as_pipeline(answer, reference(text, candidate_labels=LABELS))
