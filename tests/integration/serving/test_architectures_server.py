"""The real serving stack (toolkit + Multi Model Server) with BERT, XLM-RoBERTa and DeBERTa-v2 NLI models.

One server per architecture (module-scoped, parametrized), started with the environment the stack sets, a
Japanese deployment template included. Answers are compared with transformers' zero-shot pipeline in this process.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from stacks.serving_env import serving_environment
from zstc_local.serving import LocalServer
from zstc_local.tiny_model import cached_tiny_architecture

pytestmark = [
    pytest.mark.serving,
    pytest.mark.skipif(shutil.which("java") is None, reason="Multi Model Server needs Java (install a JRE 17)"),
]
TEMPLATE = "この文章は{}に関するものです。"
LABELS = ["スポーツ", "政治", "経済", "health"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=["bert", "xlm-roberta", "deberta-v2"])
def served(request):
    """(server, reference pipeline) of one architecture."""
    from transformers import pipeline

    model_dir = cached_tiny_architecture(request.param)
    reference = pipeline("zero-shot-classification", model=str(model_dir), device=-1)
    if reference.tokenizer.model_max_length > 1_000_000:  # tokenizer config without model_max_length
        reference.tokenizer.model_max_length = 128  # the tiny models' usable positions, where the handler truncates
    env = serving_environment(
        instance_type="ml.m5.xlarge", batch_size=4, timeout_seconds=120, hypothesis_template=TEMPLATE
    )
    with LocalServer(model_dir, env=env) as server:
        yield server, reference


def post(server, body: bytes, content_type: str, accept: str | None = None):
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(f"{server.url}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def assert_same_as_pipeline(answer, reference):
    assert answer["sequence"] == reference["sequence"]
    expected = dict(zip(reference["labels"], reference["scores"], strict=True))
    assert sorted(answer["labels"]) == sorted(expected)
    for label, score in zip(answer["labels"], answer["scores"], strict=True):
        assert abs(score - expected[label]) <= TOLERANCE, (label, score, expected[label])


def test_real_time_request_uses_the_deployment_template_and_scores_like_the_pipeline(served):
    server, reference = served
    text = "日本代表がワールドカップの初戦で勝利した。"
    record = {"inputs": text, "parameters": {"candidate_labels": LABELS}}
    status, body = post(server, json.dumps(record, ensure_ascii=False).encode(), "application/json")
    assert status == 200
    assert_same_as_pipeline(json.loads(body), reference(text, candidate_labels=LABELS, hypothesis_template=TEMPLATE))


def test_jumpstart_request_is_answered_in_the_jumpstart_shape(served):
    server, reference = served
    record = {
        "sequences": "one day I will see the world",
        "candidate_labels": ["travel", "cooking"],
        "multi_class": True,
    }
    status, body = post(server, json.dumps(record).encode(), "application/json", "application/json")
    assert status == 200
    answer = json.loads(body)
    assert set(answer) == {"sequence", "labels", "scores"}
    expected = reference(
        record["sequences"], candidate_labels=["travel", "cooking"], multi_label=True, hypothesis_template=TEMPLATE
    )
    assert_same_as_pipeline(answer, expected)


def test_multi_record_body_of_both_contracts_long_text_and_bad_lines_gets_one_line_each(served):
    server, reference = served
    long_text = "New year, new me: read more books and run every morning. " * 30
    lines = [
        {"id": "r1", "inputs": "save money", "parameters": {"candidate_labels": ["finance", "health"]}},
        "{broken json",
        {"id": "r3", "sequences": long_text, "candidate_labels": LABELS},
        {
            "id": "r4",
            "inputs": "eat better",
            "parameters": {"candidate_labels": "humor", "hypothesis_template": "About {}"},
        },
        {"id": "r5", "inputs": "no labels"},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    status, text = post(server, body.encode(), "application/jsonlines; charset=utf-8", "application/jsonlines")
    assert status == 200
    answers = [json.loads(line) for line in text.split("\n")]
    assert [answer.get("id") for answer in answers] == ["r1", None, "r3", "r4", "r5"]
    assert "error" in answers[1] and "error" in answers[4]
    assert_same_as_pipeline(
        answers[0], reference("save money", candidate_labels=["finance", "health"], hypothesis_template=TEMPLATE)
    )
    assert_same_as_pipeline(answers[2], reference(long_text, candidate_labels=LABELS, hypothesis_template=TEMPLATE))
    assert_same_as_pipeline(
        answers[3], reference("eat better", candidate_labels="humor", hypothesis_template="About {}")
    )
