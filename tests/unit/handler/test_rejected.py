"""Records the batch trigger rejected (``REJECTED_RECORD_FIELD``): each is answered with its error, nothing runs.

The trigger replaces a line larger than the job's MaxPayloadInMB by ``{"id"?, "zstc_rejected": "<message>"}``; the
handler answers ``{"id"?, "error": "<message>"}`` in its place, so the output keeps one line per input line.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zstc_handler_settings import REJECTED_RECORD_FIELD

from functions.job_outcome.logic import count_records

LABELS = ["health", "finance", "humor"]
MESSAGE = (
    "Line 3 is 7340032 bytes, the limit is 6291456 bytes (MaxPayloadInMB 6): split its text into several records, "
    "or raise max_payload_mb."
)
NORMAL = [
    {"id": "a", "inputs": "I will save money", "parameters": {"candidate_labels": LABELS}},
    {"id": 2, "sequences": "run a marathon", "candidate_labels": LABELS, "multi_class": True},
    {"inputs": ["read more books", "learn to cook"], "parameters": {"candidate_labels": "health, humor"}},
    {"id": "d", "inputs": "call my mother every week", "parameters": {"candidate_labels": LABELS[:1]}},
]


def rejection(message: Any = MESSAGE, **fields: Any) -> dict[str, Any]:
    return {**fields, REJECTED_RECORD_FIELD: message}


def run(handler, loaded, body: str, content_type: str = "application/jsonlines") -> list[Any]:
    """transform_fn as batch transform calls it; the response must be encodable as UTF-8 (as the toolkit sends it)."""
    text = handler.transform_fn(loaded, body, content_type, "application/jsonlines")
    text.encode("utf-8")
    return [json.loads(line) for line in text.split("\n")]


@pytest.fixture
def model_calls(handler, monkeypatch) -> dict[str, list[Any]]:
    """What reached the model: the records tokenized and the pair counts of each chunk run."""
    calls: dict[str, list[Any]] = {"tokenized": [], "chunks": []}
    tokenize, logits = handler._tokenize_record, handler._logits

    def tokenizing(loaded, record):
        calls["tokenized"].append(record)
        return tokenize(loaded, record)

    def running(loaded, pairs):
        calls["chunks"].append(len(pairs))
        return logits(loaded, pairs)

    monkeypatch.setattr(handler, "_tokenize_record", tokenizing)
    monkeypatch.setattr(handler, "_logits", running)
    return calls


# --- one record (real-time, SingleRecord batch) -----------------------------------------------------------------
def test_a_real_time_rejection_is_answered_with_its_message_and_id_and_runs_nothing(invoke, model_calls):
    answer = invoke(rejection(id="tweet-7"))
    assert answer == {"id": "tweet-7", "error": MESSAGE}
    assert model_calls == {"tokenized": [], "chunks": []}


def test_a_rejection_without_an_id_is_answered_without_one(invoke):
    assert invoke(rejection()) == {"error": MESSAGE}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/jsonlines", "application/json; charset=utf-8"]
)
@pytest.mark.parametrize("trailing", ["", "\n"])
def test_a_single_record_batch_request_of_a_rejection_gets_one_error_line(
    handler, loaded, model_calls, content_type, trailing
):
    body = json.dumps(rejection(id=41)) + trailing
    assert run(handler, loaded, body, content_type) == [{"id": 41, "error": MESSAGE}]
    assert model_calls["chunks"] == []


@pytest.mark.parametrize(
    "others",
    [
        NORMAL[0],  # a complete Hugging Face record
        NORMAL[1],  # a complete JumpStart record
        {"inputs": "t", "parameters": {"candidate_labels": ["a"], "multilabel": True}},  # an unknown parameter
        {"inputs": "t", "sequences": "t"},  # both contracts
        {"inputs": 5},
    ],
)
def test_the_field_makes_a_rejection_whatever_else_the_record_holds(invoke, model_calls, others):
    answer = invoke(rejection(**others))
    expected = {"id": others["id"], "error": MESSAGE} if "id" in others else {"error": MESSAGE}
    assert answer == expected
    assert model_calls["tokenized"] == []


# --- the message --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "NoneType"), (5, "int"), (1.5, "float"), (True, "bool"), (["m"], "list"), ({"m": 1}, "dict")],
)
def test_a_non_string_message_is_refused_as_a_reserved_field(invoke, value, kind):
    answer = invoke(rejection(value, id="x"))
    assert set(answer) == {"id", "error"} and answer["id"] == "x"
    assert answer["error"].startswith(f'"{REJECTED_RECORD_FIELD}" is {kind}: this field is reserved for the batch')
    assert "must be a string" in answer["error"]


def test_a_huge_non_string_value_is_not_echoed(invoke):
    answer = invoke(rejection(["x" * 1000] * 1000))
    assert "reserved for the batch trigger" in answer["error"]
    assert len(answer["error"]) < 400


def test_a_long_message_is_cut_and_says_so(handler, invoke):
    message = "m" * 50_000
    error = invoke(rejection(message))["error"]
    assert error.startswith("m" * handler.MAX_REJECTION_CHARS + "…")
    assert "m" * (handler.MAX_REJECTION_CHARS + 1) not in error
    assert error.endswith("(message cut: it was 50000 characters)")


def test_a_message_at_the_limit_is_echoed_whole(handler, invoke):
    message = "é" * handler.MAX_REJECTION_CHARS
    assert invoke(rejection(message))["error"] == message


def test_a_lone_surrogate_in_the_message_does_not_break_the_answer(handler, loaded):
    line = '{"id": "s", "' + REJECTED_RECORD_FIELD + '": "line 1 \\ud800 is too large"}'
    good = json.dumps(NORMAL[0])
    answers = run(handler, loaded, line + "\n" + good)
    assert answers[0] == {"id": "s", "error": "line 1 ? is too large"}
    assert answers[1]["id"] == "a" and "labels" in answers[1]


@pytest.mark.parametrize("message", ["", "   "])
def test_an_empty_message_still_says_the_record_was_rejected(invoke, message):
    error = invoke(rejection(message))["error"]
    assert "rejected by the batch trigger" in error and REJECTED_RECORD_FIELD in error


# --- ids ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw_id", ['"tweet-1"', "42", "-7", "3.25", "123456789012345678901234567890", '"日本"'])
def test_a_valid_id_is_echoed(handler, loaded, raw_id):
    line = '{"id": ' + raw_id + ', "' + REJECTED_RECORD_FIELD + '": "too large"}'
    assert run(handler, loaded, line) == [{"id": json.loads(raw_id), "error": "too large"}]


@pytest.mark.parametrize("raw_id", ["NaN", "Infinity", "1e999", "true", "null", '{"a": 1}', "[1]", '"\\ud800"'])
def test_an_id_that_cannot_be_echoed_is_left_out_and_the_message_kept(handler, loaded, raw_id):
    line = '{"id": ' + raw_id + ', "' + REJECTED_RECORD_FIELD + '": "too large"}'
    assert run(handler, loaded, line) == [{"error": "too large"}]


# --- mixed with normal records ------------------------------------------------------------------------------------
def body_of(records: list[dict[str, Any]], blanks: bool = False) -> str:
    lines = [json.dumps(record) for record in records]
    if blanks:  # blank lines and a trailing newline are not records (batch transform sends them)
        lines = [line + "\n" for line in lines]
    return "\n".join(lines) + ("\n" if blanks else "")


@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/json"])
def test_rejections_among_records_keep_one_answer_per_line_in_order_and_the_scores(
    handler, loaded, model_calls, content_type
):
    # Given a MultiRecord mini-batch: rejections first, between and last, with and without ids, and blank lines
    records = [
        rejection(id="r0"),
        NORMAL[0],
        NORMAL[1],
        rejection("line 4: too large"),
        NORMAL[2],
        rejection(7, id="r5"),
        NORMAL[3],
        rejection(id=math.inf),
    ]
    body = body_of(records, blanks=True)
    # When it is answered, and the same request without the rejections
    answers = run(handler, loaded, body, content_type)
    tokenized = list(model_calls["tokenized"])
    baseline = run(handler, loaded, body_of(NORMAL), content_type)
    # Then every non-empty line has exactly one answer, in its place
    assert len(answers) == len([line for line in body.split("\n") if line.strip()]) == len(records)
    assert answers[0] == {"id": "r0", "error": MESSAGE}
    assert answers[3] == {"error": "line 4: too large"}
    assert answers[5]["id"] == "r5" and "reserved for the batch trigger" in answers[5]["error"]
    assert answers[7] == {"error": MESSAGE}
    # And the normal records are answered exactly as without the rejections (same labels, same scores)
    assert [answers[i] for i in (1, 2, 4, 6)] == baseline
    assert all("error" not in answer for answer in baseline)
    # And only the normal records reached the tokenizer
    assert [record.rejected for record in tokenized] == [False] * len(NORMAL)
    # And the outcome function counts each rejection as a record error, every line as a record
    lines = handler.transform_fn(loaded, body, content_type, "application/jsonlines").encode("utf-8").split(b"\n")
    assert count_records(lines) == (len(records), 4)


def test_a_mini_batch_of_rejections_only_runs_no_model(handler, loaded, model_calls):
    answers = run(handler, loaded, body_of([rejection(id=i) for i in range(5)]))
    assert answers == [{"id": i, "error": MESSAGE} for i in range(5)]
    assert model_calls == {"tokenized": [], "chunks": []}


def test_single_record_batch_answers_equal_the_multi_record_ones(handler, loaded):
    # SingleRecord: one line per request; MultiRecord: the lines together. Each line gets the same answer.
    records = [NORMAL[0], rejection(id="r"), NORMAL[1], rejection()]
    together = run(handler, loaded, body_of(records))
    alone = [answer for record in records for answer in run(handler, loaded, json.dumps(record) + "\n")]
    assert len(alone) == len(together)
    for one, many in zip(alone, together, strict=True):
        if "error" in many:
            assert one == many
        else:  # batched with other records, the pairs get padding: logits move by ~1e-7
            assert {**one, "scores": None} == {**many, "scores": None}
            assert one["scores"] == pytest.approx(many["scores"], abs=1e-5)
    assert together[1] == {"id": "r", "error": MESSAGE} and together[3] == {"error": MESSAGE}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    places=st.lists(st.booleans(), min_size=1, max_size=10),
    messages=st.lists(st.text(max_size=40), min_size=10, max_size=10),
)
def test_rejections_anywhere_keep_every_line_in_place(handler, loaded, places, messages):
    # Given records where each True is a rejection (with the message drawn) and each False a normal record
    normal = iter(NORMAL * 3)
    records = [rejection(messages[i], id=f"r{i}") if rejected else next(normal) for i, rejected in enumerate(places)]
    answers = run(handler, loaded, body_of(records))
    assert len(answers) == len(records)
    for index, (record, answer) in enumerate(zip(records, answers, strict=True)):
        if REJECTED_RECORD_FIELD in record:
            assert answer["id"] == f"r{index}" and set(answer) == {"id", "error"}
            message = messages[index].encode("utf-8", "replace").decode("utf-8")
            assert answer["error"] == message or (not message.strip() and "rejected" in answer["error"])
        else:
            first = answer[0] if isinstance(answer, list) else answer
            assert "labels" in first and first.get("id") == record.get("id")


# --- parse_record on open-ended objects (no model) ----------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(
    others=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5),
    value=JSON_VALUES | st.text(max_size=3000),
)
def test_any_object_with_the_field_is_a_rejection_with_a_bounded_writable_error(handler, others, value):
    record = handler.parse_record({**others, REJECTED_RECORD_FIELD: value})
    assert record.rejected and record.error and not record.texts
    assert len(record.error) <= handler.MAX_REJECTION_CHARS + 60
    record.error.encode("utf-8")
    if record.has_id:
        assert record.id is others["id"]
        handler._check_id(record.id)  # echoed only when valid
    else:
        assert "id" not in others or not _valid_id(handler, others["id"])


def _valid_id(handler, value: Any) -> bool:
    try:
        handler._check_id(value)
    except handler.RecordError:
        return False
    return True


def test_a_record_without_the_field_is_not_a_rejection(handler):
    record = handler.parse_record(NORMAL[0])
    assert not record.rejected and record.error is None
