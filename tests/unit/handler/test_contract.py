"""The handler's request/response contract, driven through transform_fn with the tiny model."""

from __future__ import annotations

import json
import re

import pytest

LABELS = ["health", "finance", "humor", "career"]


def record(text="I will run a marathon", labels=None, **extra):
    parameters = {"candidate_labels": LABELS if labels is None else labels, **extra.pop("parameters", {})}
    return {"inputs": text, "parameters": parameters, **extra}


def assert_matches(answer, reference, tolerance=1e-5):
    assert answer["sequence"] == reference["sequence"]
    assert sorted(answer["labels"]) == sorted(reference["labels"])
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert score == pytest.approx(expected[label], abs=tolerance)


# --- real-time requests --------------------------------------------------------------------------------------------
def test_single_object_gets_a_single_object_with_labels_sorted_by_score(invoke, zero_shot_pipeline):
    answer = invoke(record())
    assert set(answer) == {"sequence", "labels", "scores"}
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    assert_matches(answer, zero_shot_pipeline("I will run a marathon", candidate_labels=LABELS))


def test_list_inputs_get_a_list_of_results_in_input_order(invoke):
    answer = invoke(record(text=["first text", "second text", "third"]))
    assert [result["sequence"] for result in answer] == ["first text", "second text", "third"]


def test_id_is_echoed_on_results(invoke):
    assert invoke(record(id="abc-1"))["id"] == "abc-1"


def test_numeric_id_is_echoed_unchanged(invoke):
    assert invoke(record(id=42))["id"] == 42


def test_pretty_printed_object_is_one_record(invoke):
    answer = invoke(json.dumps(record(), indent=2))
    assert answer["sequence"] == "I will run a marathon"


def test_comma_separated_labels_are_split_like_the_pipeline(invoke, zero_shot_pipeline):
    answer = invoke(record(labels="health , finance,,humor"))
    assert sorted(answer["labels"]) == ["finance", "health", "humor"]
    assert_matches(answer, zero_shot_pipeline("I will run a marathon", candidate_labels="health , finance,,humor"))


def test_multi_label_scores_each_label_independently(invoke, zero_shot_pipeline):
    answer = invoke(record(parameters={"multi_label": True}))
    assert sum(answer["scores"]) > 1.0  # independent probabilities, not a distribution
    assert_matches(answer, zero_shot_pipeline("I will run a marathon", candidate_labels=LABELS, multi_label=True))


def test_custom_hypothesis_template_is_used(invoke, zero_shot_pipeline):
    answer = invoke(record(parameters={"hypothesis_template": "Das ist {}."}))
    reference = zero_shot_pipeline("I will run a marathon", candidate_labels=LABELS, hypothesis_template="Das ist {}.")
    assert_matches(answer, reference)


# --- content types -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/jsonlines",
        "application/jsonlines; charset=utf-8",
        "application/x-jsonlines",
        None,
    ],
)
def test_json_and_json_lines_content_types_are_accepted(invoke, content_type):
    answers = invoke(None, content_type=content_type, lines=[record(id=1), record(id=2)])
    assert [answer["id"] for answer in answers] == [1, 2]


def test_bytes_body_with_a_latin1_charset_is_decoded_with_it(handler, loaded):
    body = json.dumps(record(text="café"), ensure_ascii=False).encode("latin-1")
    answer = json.loads(handler.transform_fn(loaded, body, "application/json; charset=ISO-8859-1", "application/json"))
    assert answer["sequence"] == "café"


def test_utf8_byte_order_mark_is_ignored(handler, loaded):
    body = b"\xef\xbb\xbf" + json.dumps(record()).encode()
    answer = json.loads(handler.transform_fn(loaded, body, "application/json", "application/json"))
    assert answer["sequence"] == "I will run a marathon"


@pytest.mark.parametrize("content_type", ["text/csv", "text/plain", "application/x-npy"])
def test_unsupported_content_type_is_a_request_error_naming_the_supported_ones(handler, loaded, content_type):
    with pytest.raises(handler.RequestError, match="application/jsonlines"):
        handler.transform_fn(loaded, json.dumps(record()), content_type, "application/json")


def test_unknown_charset_is_a_request_error(handler, loaded):
    with pytest.raises(handler.RequestError, match="charset"):
        handler.transform_fn(loaded, b"{}", "application/json; charset=klingon", "application/json")


def test_unsupported_accept_is_a_request_error(handler, loaded):
    with pytest.raises(handler.RequestError, match="Accept"):
        handler.transform_fn(loaded, json.dumps(record()), "application/json", "text/csv")


@pytest.mark.parametrize(
    "accept", ["*/*", "application/jsonlines", "application/json; charset=utf-8", "text/html, */*"]
)
def test_json_compatible_accept_values_are_answered(invoke, accept):
    assert "labels" in invoke(record(), accept=accept)


# --- JSON Lines (batch transform MultiRecord) -----------------------------------------------------------------------
def test_json_lines_get_one_line_per_record_in_order(handler, loaded):
    lines = [json.dumps(record(text=f"text number {i}", id=i)) for i in range(11)]
    text = handler.transform_fn(loaded, "\n".join(lines), "application/jsonlines", "application/jsonlines")
    answers = [json.loads(line) for line in text.split("\n")]
    assert [answer["id"] for answer in answers] == list(range(11))
    assert [answer["sequence"] for answer in answers] == [f"text number {i}" for i in range(11)]


def test_blank_lines_and_a_trailing_newline_are_not_records(handler, loaded):
    body = json.dumps(record(id=1)) + "\n\n" + json.dumps(record(id=2)) + "\r\n"
    text = handler.transform_fn(loaded, body, "application/jsonlines", "application/jsonlines")
    assert [json.loads(line)["id"] for line in text.split("\n")] == [1, 2]


def test_bad_lines_get_errors_and_the_others_are_classified(invoke):
    answers = invoke(None, lines=[record(id="a"), "{not json", record(id="b", text=""), record(id="c")])
    assert [answer.get("id") for answer in answers] == ["a", None, "b", "c"]
    assert "labels" in answers[0] and "labels" in answers[3]
    assert "Line 2 is not valid JSON" in answers[1]["error"]
    assert set(answers[2]) == {"id", "error"}


def test_invalid_utf8_on_one_line_fails_only_that_line(handler, loaded):
    body = json.dumps(record(id=1)).encode() + b'\n{"inputs": "\xff\xfe"}\n' + json.dumps(record(id=3)).encode()
    text = handler.transform_fn(loaded, body, "application/json", "application/json")
    answers = [json.loads(line) for line in text.split("\n")]
    assert "not valid utf-8" in answers[1]["error"]
    assert [answers[0]["id"], answers[2]["id"]] == [1, 3]


def test_records_with_different_parameters_share_one_request(invoke, zero_shot_pipeline):
    answers = invoke(
        None,
        lines=[
            record(text="save money", labels=["finance", "health"]),
            record(text="save money", labels=["humor"], parameters={"multi_label": True}),
            record(text="eat better", labels=LABELS, parameters={"hypothesis_template": "About {}"}),
        ],
    )
    assert_matches(answers[0], zero_shot_pipeline("save money", candidate_labels=["finance", "health"]))
    assert_matches(answers[1], zero_shot_pipeline("save money", candidate_labels=["humor"], multi_label=True))
    assert_matches(
        answers[2], zero_shot_pipeline("eat better", candidate_labels=LABELS, hypothesis_template="About {}")
    )


def test_large_request_spans_many_batches_and_keeps_order(invoke, zero_shot_pipeline):
    texts = [("word " * (i % 37 + 1)).strip() + f" {i}" for i in range(60)]
    answers = invoke(None, lines=[record(text=text, id=i) for i, text in enumerate(texts)])
    assert [answer["id"] for answer in answers] == list(range(60))
    for i in (0, 17, 59):
        assert_matches(answers[i], zero_shot_pipeline(texts[i], candidate_labels=LABELS))


def test_unknown_top_level_fields_are_ignored(invoke):
    assert "labels" in invoke(record(source="crm", meta={"a": 1}))


# --- bad records -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"parameters": {"candidate_labels": LABELS}}, '"inputs" is missing'),
        (record(text=""), '"inputs" is empty'),
        (record(text="   \n"), '"inputs" is empty'),
        (record(text=[]), "empty list"),
        (record(text=["ok", ""]), r'"inputs"\[1\] is empty'),
        (record(text=["ok", 3]), r'"inputs"\[1\] is int'),
        (record(text=12), '"inputs" is int'),
        ({"inputs": "text"}, "candidate_labels is missing or empty"),
        (record(labels=[]), "candidate_labels is missing or empty"),
        (record(labels=" , ,"), "candidate_labels is missing or empty"),
        (record(labels=["a", 2]), r"candidate_labels\[1\] is int"),
        (record(labels=["a", " "]), r"candidate_labels\[1\] is empty"),
        (record(labels={"a": 1}), "candidate_labels is dict"),
        (record(parameters={"hypothesis_template": "no placeholder"}), "has no {}"),
        (record(parameters={"hypothesis_template": "{label} here"}), "cannot be formatted"),
        (record(parameters={"hypothesis_template": "{} and {}"}), "cannot be formatted"),
        (record(parameters={"hypothesis_template": 5}), "hypothesis_template is int"),
        (record(parameters={"multi_label": "yes"}), "multi_label is 'yes'"),
        (record(parameters={"multilabel": True}), "Unknown parameter"),
        ({"inputs": "text", "parameters": ["a"]}, '"parameters" is list'),
        (["not", "an", "object"], "must be a JSON object"),
        ('"just a string"', "must be a JSON object"),  # a raw line: a JSON string
    ],
)
def test_bad_record_gets_an_error_that_says_what_to_fix(invoke, bad, message):
    answer = invoke(None, lines=[bad, record(id="next")])
    assert set(answer[0]) == {"error"}
    assert re.search(message, answer[0]["error"]), answer[0]["error"]
    assert "labels" in answer[1]


def test_error_of_a_record_with_an_id_echoes_the_id(invoke):
    assert invoke(record(id=7, text="")) == {"id": 7, "error": '"inputs" is empty: give the text to classify.'}


def test_empty_body_gets_an_error_object(invoke):
    assert "body is empty" in invoke("")["error"]


def test_invalid_single_document_gets_an_error_object(invoke):
    assert "not valid JSON" in invoke("{oops")["error"]


# --- pipeline traps ------------------------------------------------------------------------------------------------
def test_long_text_is_truncated_and_the_hypothesis_kept(invoke, zero_shot_pipeline, loaded):
    text = "resolution " * 400  # far beyond the tiny model's 128 tokens
    answer = invoke(record(text=text))
    assert answer["sequence"] == text  # the answer echoes the full text
    assert_matches(answer, zero_shot_pipeline(text, candidate_labels=LABELS))


def test_hypothesis_longer_than_the_model_is_an_error_for_that_record(invoke):
    answers = invoke(None, lines=[record(labels=["x " * 300]), record(id=2)])
    assert "shorten the label" in answers[0]["error"]
    assert answers[1]["id"] == 2


def test_special_tokens_in_text_do_not_break_a_batch(invoke, zero_shot_pipeline):
    texts = ["plain text", "a </s> in the middle", "two </s></s> and <s> and <pad>", "another plain one"]
    answers = invoke(None, lines=[record(text=text) for text in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert_matches(answer, zero_shot_pipeline(text, candidate_labels=LABELS))


def test_duplicate_labels_are_kept_and_share_probability_like_the_pipeline(invoke, zero_shot_pipeline):
    labels = ["health", "finance", "health"]
    answer = invoke(record(labels=labels))
    reference = zero_shot_pipeline("I will run a marathon", candidate_labels=labels)
    assert answer["labels"] == reference["labels"]
    assert answer["scores"] == pytest.approx(reference["scores"], abs=1e-5)
    health = [score for label, score in zip(answer["labels"], answer["scores"], strict=True) if label == "health"]
    assert health[0] == health[1]


def test_single_label_without_multi_label_is_scored_as_entailment_vs_contradiction(invoke, zero_shot_pipeline):
    # The pipeline does this silently (a softmax over one label would always give 1.0); we match it.
    answer = invoke(record(labels=["health"]))
    assert 0.0 < answer["scores"][0] < 1.0
    assert_matches(answer, zero_shot_pipeline("I will run a marathon", candidate_labels=["health"]))


def test_japanese_text_and_labels(invoke, zero_shot_pipeline):
    text, labels = "今年こそは毎朝ジョギングをして、本をたくさん読みたい。", ["健康", "お金", "読書"]
    answer = invoke(record(text=text, labels=labels, parameters={"hypothesis_template": "これは{}の話です。"}))
    assert answer["sequence"] == text
    reference = zero_shot_pipeline(text, candidate_labels=labels, hypothesis_template="これは{}の話です。")
    assert_matches(answer, reference)


def test_non_ascii_is_written_as_utf8_not_escaped(handler, loaded):
    text = handler.transform_fn(loaded, json.dumps(record(text="日本語")), "application/json", "application/json")
    assert "日本語" in text


# --- the SageMaker JumpStart contract --------------------------------------------------------------------------------
def jumpstart(text="one day I will see the world", labels=("travel", "cooking", "dancing"), **extra):
    return {"sequences": text, "candidate_labels": list(labels), **extra}


def test_jumpstart_request_gets_the_jumpstart_answer(invoke, zero_shot_pipeline):
    # The request of the JumpStart zero-shot notebook (introduction_to_amazon_algorithms/jumpstart_zstc)
    answer = invoke(jumpstart())
    assert set(answer) == {"sequence", "labels", "scores"}
    expected = zero_shot_pipeline("one day I will see the world", candidate_labels=["travel", "cooking", "dancing"])
    assert_matches(answer, expected)


def test_jumpstart_multi_class_scores_each_label_independently(invoke, zero_shot_pipeline):
    labels = ["travel", "cooking", "dancing", "exploration"]
    answer = invoke(jumpstart(labels=labels, multi_class=True))
    expected = zero_shot_pipeline("one day I will see the world", candidate_labels=labels, multi_label=True)
    assert_matches(answer, expected)
    single = invoke(jumpstart(labels=labels, multi_class=False))
    assert sum(single["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_jumpstart_and_hugging_face_records_share_a_json_lines_request(invoke, zero_shot_pipeline):
    answers = invoke(
        None,
        lines=[
            jumpstart(id="js-1"),
            record(id="hf-2"),
            jumpstart(id="js-3", text=["first text", "second text"], hypothesis_template="About {}."),
            jumpstart(id="js-4", labels=[]),
        ],
    )
    assert [answers[0]["id"], answers[1]["id"], answers[3]["id"]] == ["js-1", "hf-2", "js-4"]
    assert [result["id"] for result in answers[2]] == ["js-3", "js-3"]  # list input: one result per text
    assert_matches(answers[1], zero_shot_pipeline("I will run a marathon", candidate_labels=LABELS))
    assert [result["sequence"] for result in answers[2]] == ["first text", "second text"]
    expected = zero_shot_pipeline(
        "second text", candidate_labels=["travel", "cooking", "dancing"], hypothesis_template="About {}."
    )
    assert_matches(answers[2][1], expected)
    assert answers[3] == {
        "id": "js-4",
        "error": 'candidate_labels is missing or empty: give at least one label, e.g. ["sports", "politics"].',
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"sequences": "", "candidate_labels": ["a"]}, '"sequences" is empty'),
        ({"sequences": 3, "candidate_labels": ["a"]}, '"sequences" is int'),
        ({"sequences": "text"}, "^candidate_labels is missing"),
        ({"sequences": "text", "candidate_labels": ["a"], "multi_class": "yes"}, "^multi_class is 'yes'"),
        ({"sequences": "t", "candidate_labels": ["a"], "multi_class": True, "multi_label": False}, "disagree"),
        ({"sequences": "t", "inputs": "t", "candidate_labels": ["a"]}, 'both "inputs" and "sequences"'),
        ({"sequences": "t", "parameters": {"candidate_labels": ["a"]}}, "at the top level"),
        ({"sequences": "t", "candidate_labels": ["a"], "hypothesis_template": "none"}, "^hypothesis_template 'none'"),
    ],
)
def test_bad_jumpstart_record_gets_an_error_naming_its_own_fields(invoke, bad, message):
    answers = invoke(None, lines=[bad, jumpstart(id="next")])
    assert set(answers[0]) == {"error"}
    assert re.search(message, answers[0]["error"]), answers[0]["error"]
    assert "labels" in answers[1]
