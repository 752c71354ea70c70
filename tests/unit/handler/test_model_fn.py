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


# --- models that cannot serve zero-shot classification fail at load, with the reason -----------------------------
def copy_model(source, target, **config_changes):
    import shutil

    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def bert_dir():
    from zstc_local.tiny_model import cached_tiny_architecture

    return cached_tiny_architecture("bert")


def test_an_architecture_the_handler_does_not_support_is_refused_naming_the_supported_ones(handler, bert_dir, tmp_path):
    model_dir = copy_model(bert_dir, tmp_path / "m", model_type="megatron-bert")
    with pytest.raises(handler.ModelError, match=r"model_type 'megatron-bert'.*supports.*deberta-v2.*xlm-roberta"):
        handler.model_fn(str(model_dir))


def test_a_checkpoint_without_a_sequence_classification_head_is_refused(handler, bert_dir, tmp_path):
    from transformers import AutoConfig, BertForMaskedLM

    # Given a BERT masked-language model (what AutoModelForSequenceClassification would load with a random head)
    model_dir = tmp_path / "mlm"
    BertForMaskedLM(AutoConfig.from_pretrained(bert_dir)).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model_dir / name).write_bytes((bert_dir / name).read_bytes())
    with pytest.raises(handler.ModelError, match="BertForMaskedLM, not a sequence-classification model"):
        handler.model_fn(str(model_dir))


def test_a_checkpoint_whose_classification_weights_are_missing_is_refused(handler, bert_dir, tmp_path):
    from transformers import AutoConfig, BertModel

    # Given a bare encoder whose config claims a classification head
    model_dir = tmp_path / "bare"
    BertModel(AutoConfig.from_pretrained(bert_dir)).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model_dir / name).write_bytes((bert_dir / name).read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(handler.ModelError, match=r"lacks weights.*classifier\.weight.*scores would be random"):
        handler.model_fn(str(model_dir))


def test_a_model_without_an_entailment_label_is_refused(handler, bert_dir, tmp_path):
    labels = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    model_dir = copy_model(bert_dir, tmp_path / "m", id2label=labels, label2id={v: int(k) for k, v in labels.items()})
    with pytest.raises(handler.ModelError, match=r"\(0: LABEL_0, 1: LABEL_1, 2: LABEL_2\) include none starting"):
        handler.model_fn(str(model_dir))


def test_a_tokenizer_that_makes_inputs_the_model_does_not_take_is_refused(handler, bert_dir, tmp_path):
    from zstc_local.tiny_model import cached_tiny_architecture

    # Given a DistilBERT model (no token_type_ids) packaged with a BERT tokenizer (which makes them)
    model_dir = copy_model(cached_tiny_architecture("distilbert"), tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).write_bytes((bert_dir / name).read_bytes())
    with pytest.raises(handler.ModelError, match="does not take token_type_ids"):
        handler.model_fn(str(model_dir))


@pytest.mark.parametrize(
    ("label2id", "num_labels", "expected"),
    [
        ({"contradiction": 0, "neutral": 1, "entailment": 2}, 3, (2, 0)),  # bart-large-mnli
        ({"contradiction": 0, "entailment": 1, "neutral": 2}, 3, (1, 0)),  # cross-encoder/nli-deberta-v3-base
        ({"ENTAILMENT": 0, "NEUTRAL": 1, "CONTRADICTION": 2}, 3, (0, 2)),  # upper case, entailment first
        ({"entailment": 0, "not_entailment": 1}, 2, (0, 1)),  # MoritzLaurer zeroshot-v2.0
        ({"not_entailment": 0, "entailment": 1}, 2, (1, 0)),
        ({"Entailed": 1, "other": 0}, 2, (1, 0)),  # any name starting with "entail"
    ],
)
def test_entailment_and_contradiction_ids_follow_the_pipelines_rule(handler, label2id, num_labels, expected):
    assert handler.nli_label_ids(label2id, num_labels) == expected


def test_a_one_class_model_is_refused(handler):
    with pytest.raises(handler.ModelError, match="at least two"):
        handler.nli_label_ids({"entailment": 0}, 1)


# --- the deployment's default hypothesis template ------------------------------------------------------------------
def test_the_environments_template_is_the_default_of_records_that_give_none(handler, tiny_model_dir, monkeypatch):
    from transformers import pipeline

    # Given a Japanese deployment template
    template = "この文章は{}に関するものです。"
    monkeypatch.setenv("ZSTC_HYPOTHESIS_TEMPLATE", template)
    loaded = handler.model_fn(str(tiny_model_dir))
    record = {"inputs": "毎朝ジョギングをする", "parameters": {"candidate_labels": ["健康", "お金"]}}
    own = {**record, "parameters": {**record["parameters"], "hypothesis_template": "Es geht um {}."}}
    body = json.dumps(record) + "\n" + json.dumps(own)
    default, explicit = (json.loads(line) for line in handler.transform_fn(loaded, body, None, None).split("\n"))
    reference = pipeline("zero-shot-classification", model=str(tiny_model_dir), device=-1)
    # Then a record without a template uses it, and a record's own template still wins
    for answer, used in ((default, template), (explicit, "Es geht um {}.")):
        expected = reference("毎朝ジョギングをする", candidate_labels=["健康", "お金"], hypothesis_template=used)
        assert answer["labels"] == expected["labels"]
        assert answer["scores"] == pytest.approx(expected["scores"], abs=1e-5)


@pytest.mark.parametrize("template", ["no placeholder", "{} and {}", "{:>10000000}"])
def test_an_invalid_environment_template_fails_loading_naming_the_variable(
    handler, tiny_model_dir, monkeypatch, template
):
    monkeypatch.setenv("ZSTC_HYPOTHESIS_TEMPLATE", template)
    with pytest.raises(ValueError, match=r"ZSTC_HYPOTHESIS_TEMPLATE=.*(has no \{\}|cannot be formatted)"):
        handler.model_fn(str(tiny_model_dir))


def test_handler_and_stack_share_the_environment_names(handler):
    import zstc_handler_settings

    from stacks import serving_env

    assert serving_env.HANDLER_BATCH_SIZE_ENV == zstc_handler_settings.ENV_BATCH_SIZE == "ZSTC_BATCH_SIZE"
    assert serving_env.HANDLER_TEMPLATE_ENV == zstc_handler_settings.ENV_HYPOTHESIS_TEMPLATE
    assert handler.DEFAULT_TEMPLATE == serving_env.DEFAULT_HYPOTHESIS_TEMPLATE == "This example is {}."


def test_supported_architectures_are_exactly_the_tested_ones(handler):
    from zstc_local.tiny_model import ARCHITECTURES

    assert sorted(handler.supported_architectures()) == sorted(ARCHITECTURES)
