"""Out of process: the toolkit's real serving entry point (Multi Model Server, Java) with our handler, over HTTP.

One server for the module, started with the environment the stack sets on the SageMaker model.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from stacks.serving_env import serving_environment
from zstc_local.serving import LocalServer

pytestmark = [
    pytest.mark.serving,
    pytest.mark.skipif(shutil.which("java") is None, reason="Multi Model Server needs Java (install a JRE 17)"),
]
RECORD = {"inputs": "I will save money", "parameters": {"candidate_labels": ["finance", "health", "humor"]}}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=16, timeout_seconds=120)
    with LocalServer(tiny_model_dir, env=env) as running:
        yield running


def post(server, body: bytes, content_type: str, accept: str | None = None):
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    request = urllib.request.Request(f"{server.url}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read().decode("utf-8")


def test_ping_answers_200(server):
    with urllib.request.urlopen(f"{server.url}/ping", timeout=10) as response:
        assert response.status == 200


def test_real_time_request_gets_one_json_object(server):
    status, content_type, body = post(server, json.dumps(RECORD).encode(), "application/json")
    assert status == 200
    assert content_type.startswith("application/json")
    answer = json.loads(body)
    assert answer["sequence"] == "I will save money"
    assert sorted(answer["labels"]) == ["finance", "health", "humor"]
    assert answer["scores"] == sorted(answer["scores"], reverse=True)


def test_multi_record_body_of_good_and_bad_lines_gets_one_line_per_record_in_order(server):
    lines = [
        json.dumps({**RECORD, "id": "r1"}),
        "{broken json",
        json.dumps({"id": "r3", "inputs": "", "parameters": RECORD["parameters"]}),
        json.dumps({"id": "r4", "inputs": "今年こそは本を読む </s>", "parameters": RECORD["parameters"]}),
        json.dumps({"id": "r5", "inputs": "no labels"}),
        json.dumps({**RECORD, "id": "r6", "parameters": {**RECORD["parameters"], "multi_label": True}}),
    ]
    status, content_type, body = post(
        server, ("\n".join(lines) + "\n").encode(), "application/jsonlines; charset=utf-8", "application/jsonlines"
    )
    assert status == 200
    assert content_type.startswith("application/jsonlines")
    answers = [json.loads(line) for line in body.split("\n")]
    assert [answer.get("id") for answer in answers] == ["r1", None, "r3", "r4", "r5", "r6"]
    assert ["error" in answer for answer in answers] == [False, True, True, False, True, False]
    assert "candidate_labels" in answers[4]["error"]


def test_application_json_with_charset_is_accepted(server):
    status, _, body = post(server, json.dumps(RECORD).encode(), "application/json; charset=utf-8")
    assert status == 200
    assert "labels" in json.loads(body)


def test_payload_larger_than_the_model_server_default_limit_passes(server):
    # Multi Model Server's default request and response limits are 6.5 MB; batch transform sends up to 100 MB.
    text = "New year, new me: read more books and run every morning. " * 18  # ~1 KB, truncated by the model
    lines = [json.dumps({"id": i, "inputs": text, "parameters": {"candidate_labels": ["books"]}}) for i in range(7000)]
    body = "\n".join(lines).encode()
    assert len(body) > 7 * 1024 * 1024
    status, _, answer = post(server, body, "application/jsonlines", "application/jsonlines")
    assert status == 200
    ids = [json.loads(line)["id"] for line in answer.split("\n")]
    assert ids == list(range(7000))


def test_unsupported_content_type_is_a_400_that_names_the_supported_types(server):
    status, _, body = post(server, b"a,b\n", "text/csv")
    assert status == 400
    assert "application/jsonlines" in body
