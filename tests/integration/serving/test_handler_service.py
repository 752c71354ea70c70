"""In process: the toolkit's HuggingFaceHandlerService loads our code/inference.py from the model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

HANDLER_CODE = Path(__file__).resolve().parents[3] / "model" / "code"
RECORD = {"inputs": "I will save money", "parameters": {"candidate_labels": ["finance", "health"]}}


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    """An initialized handler service over a copy of the tiny model with our code/ inside, as in model.tar.gz."""
    from mms.context import Context
    from sagemaker_huggingface_inference_toolkit.handler_service import HuggingFaceHandlerService

    model_dir = tmp_path_factory.mktemp("model")
    shutil.copytree(tiny_model_dir, model_dir, dirs_exist_ok=True)
    shutil.copytree(HANDLER_CODE, model_dir / "code", ignore=shutil.ignore_patterns("__pycache__"))
    service = HuggingFaceHandlerService()
    service.initialize(Context("model", str(model_dir), None, 1, None, "1.1.11"))
    return service


def handle(service, body: bytes, headers: dict[str, str]):
    """One request as Multi Model Server hands it to the service: body bytes and request headers."""
    from mms.context import Context, RequestProcessor
    from mms.metrics.metrics_store import MetricsStore

    context = Context("model", service.model_dir, None, 1, None, "1.1.11")
    context.request_processor = [RequestProcessor(headers)]
    context.metrics = MetricsStore({0: "request-0"}, "model")
    response = service.handle([{"body": bytearray(body)}], context)
    return response[0], context.get_response_content_type(0)


def test_the_service_uses_our_handler(service):
    import inference

    assert service.transform_fn.__module__ == inference.__name__
    assert isinstance(service.model, inference.ZeroShotModel)


def test_real_time_request_is_classified(service):
    body, content_type = handle(service, json.dumps(RECORD).encode(), {"Content-Type": "application/json"})
    answer = json.loads(body)
    assert sorted(answer["labels"]) == ["finance", "health"]
    assert content_type == "application/json"


def test_multi_record_body_with_charset_gets_one_line_per_record(service):
    lines = [json.dumps({**RECORD, "id": 1}), "not json", json.dumps({**RECORD, "id": 3})]
    body, content_type = handle(
        service,
        "\n".join(lines).encode(),
        {"Content-Type": "application/jsonlines; charset=utf-8", "Accept": "application/jsonlines"},
    )
    answers = [json.loads(line) for line in body.split("\n")]
    assert [answer.get("id") for answer in answers] == [1, None, 3]
    assert "error" in answers[1]
    assert content_type == "application/jsonlines"


def test_invalid_utf8_in_an_application_json_body_fails_only_its_line(service):
    # The toolkit decodes exact application/json bodies itself; our model_fn makes it hand us the bytes.
    body = json.dumps({**RECORD, "id": 1}).encode() + b"\n\xff\xfe\n" + json.dumps({**RECORD, "id": 3}).encode()
    text, _ = handle(service, body, {"Content-Type": "application/json"})
    answers = [json.loads(line) for line in text.split("\n")]
    assert [answer.get("id") for answer in answers] == [1, None, 3]
    assert "not valid utf-8" in answers[1]["error"]


def test_missing_accept_is_answered_as_json(service):
    _, content_type = handle(service, json.dumps(RECORD).encode(), {"Content-Type": "application/json"})
    assert content_type == "application/json"


def test_unsupported_content_type_is_an_http_400_naming_the_supported_types(service):
    from mms.service import PredictionException

    with pytest.raises(PredictionException, match="application/jsonlines") as raised:
        handle(service, b"a,b\n", {"Content-Type": "text/csv"})
    assert raised.value.error_code == 400
