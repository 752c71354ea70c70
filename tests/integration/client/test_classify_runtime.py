"""``Classifier.classify`` over the SageMaker runtime API, with botocore's Stubber and a fake endpoint (no AWS).

Stubber checks the exact requests (payload packing, retries of throttling and cold starts); the fake endpoint, which
answers concurrently and out of order, checks that results come back complete and in input order.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from zstc.client import (
    SERVERLESS_PAYLOAD_LIMIT,
    Classification,
    Classifier,
    Results,
)
from zstc.errors import InputError

ENDPOINT = "zstc-endpoint"
LABELS = ["Health", "Career"]


def runtime_client():
    return boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def model_answer(body: bytes) -> bytes:
    """What our handler answers for a JSON Lines body: one line per record, ids echoed, errors for empty text."""
    lines = []
    for raw in body.decode().split("\n"):
        record = json.loads(raw)
        if record["inputs"].startswith("bad"):
            lines.append({"id": record["id"], "error": "the model rejected this record"})
        else:
            labels = record["parameters"]["candidate_labels"]
            lines.append({"id": record["id"], "sequence": record["inputs"], "labels": labels, "scores": [0.6, 0.4]})
    return "\n".join(json.dumps(line) for line in lines).encode()


def ok_response(body: bytes) -> dict:
    answer = model_answer(body)
    return {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/jsonlines"}


def request_body(records: list[tuple[int, str]]) -> bytes:
    parameters = {"candidate_labels": LABELS, "multi_label": False}
    lines = [json.dumps({"id": i, "inputs": text, "parameters": parameters}, ensure_ascii=False) for i, text in records]
    return "\n".join(lines).encode()


def test_a_throttled_request_is_retried_and_nothing_is_duplicated_or_lost():
    # Given an endpoint that throttles, then is not ready (cold start), then answers
    runtime = runtime_client()
    sleeps: list[float] = []
    texts = ["run a marathon", "get a new job", "save money"]
    body = request_body(list(enumerate(texts)))
    expected = {"EndpointName": ENDPOINT, "ContentType": "application/jsonlines", "Accept": ANY, "Body": body}
    with Stubber(runtime) as stub:
        stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400, expected_params=expected)
        stub.add_client_error("invoke_endpoint", "ModelNotReadyException", "warming up", 429, expected_params=expected)
        stub.add_response("invoke_endpoint", ok_response(body), expected_params=expected)
        classifier = Classifier(endpoint_name=ENDPOINT, runtime=runtime, concurrency=1, sleep=sleeps.append)
        # When three texts are classified
        results = classifier.classify(texts, LABELS)
        stub.assert_no_pending_responses()
    # Then the same request was sent three times, with backoff between, and each text has exactly one result
    assert len(sleeps) == 2 and 0 < sleeps[0] <= sleeps[1] * 2
    assert isinstance(results, Results)
    assert [(r.id, r.sequence, r.label) for r in results] == [(0, texts[0], "Health"), (1, texts[1], "Health"),
                                                             (2, texts[2], "Health")]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "status", "modeled"),
    [
        ("ThrottlingException", 400, {}),
        ("ServiceUnavailable", 503, {}),
        ("ModelError", 424, {"OriginalStatusCode": 503, "OriginalMessage": "busy"}),
        ("ModelError", 424, {"OriginalStatusCode": 429, "OriginalMessage": "too many"}),
    ],
)
def test_serverless_busy_answers_are_retried(code, status, modeled):
    runtime = runtime_client()
    body = request_body([(0, "hello")])
    with Stubber(runtime) as stub:
        stub.add_client_error("invoke_endpoint", code, "busy", status, modeled_fields=modeled)
        stub.add_response("invoke_endpoint", ok_response(body))
        result = Classifier(endpoint_name=ENDPOINT, runtime=runtime, sleep=lambda s: None).classify(["hello"], LABELS)
    assert result[0].label == "Health" and result[0].error is None


def test_a_model_error_for_the_whole_request_becomes_each_records_error_not_an_exception():
    runtime = runtime_client()
    with Stubber(runtime) as stub:
        stub.add_client_error(
            "invoke_endpoint",
            "ModelError",
            'Received client error (400) from primary with message "bad"',
            424,
            modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "unsupported content type"},
        )
        results = Classifier(endpoint_name=ENDPOINT, runtime=runtime).classify(["a", "b"], LABELS)
    assert [r.error for r in results] == ["the model answered HTTP 400: unsupported content type"] * 2


def test_retries_end_after_max_attempts_with_an_error_per_record():
    runtime = runtime_client()
    with Stubber(runtime) as stub:
        for _ in range(3):
            stub.add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400)
        results = Classifier(endpoint_name=ENDPOINT, runtime=runtime, max_attempts=3, sleep=lambda s: None).classify(
            ["a", "b"], LABELS
        )
        stub.assert_no_pending_responses()
    assert all(r.error.startswith("gave up after 3 attempts") and "ThrottlingException" in r.error for r in results)


def test_records_are_packed_under_the_payload_limit_and_the_record_cap():
    # Given texts of ~300 KB each and the serverless limit of 4 MB
    runtime = runtime_client()
    texts = [f"{i} " + "x" * 300_000 for i in range(30)]
    bodies: list[bytes] = []

    def capture(params, **kwargs):
        bodies.append(params["Body"])

    runtime.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint", capture)
    with Stubber(runtime) as stub:
        for _ in range(3):
            stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b""), 0)})
        # the answers are computed from the captured requests below; empty bodies mean "no answer" for now
        classifier = Classifier(
            endpoint_name=ENDPOINT,
            runtime=runtime,
            payload_limit=SERVERLESS_PAYLOAD_LIMIT,
            records_per_request=100,
            concurrency=1,
        )
        results = classifier.classify(texts, LABELS)
    # Then 3 requests (13 + 13 + 4 records), each under 4 MB, covering every text exactly once in order
    assert all(len(body) <= SERVERLESS_PAYLOAD_LIMIT for body in bodies)
    ids = [json.loads(line)["id"] for body in bodies for line in body.split(b"\n")]
    assert ids == list(range(30))
    assert [len(body.split(b"\n")) for body in bodies] == [13, 13, 4]
    # and a request that came back without answers leaves explicit errors, not gaps
    assert len(results) == 30 and all(r.error == "no answer came back for this record" for r in results)


def test_a_record_over_the_payload_limit_is_an_error_and_the_rest_are_classified():
    runtime = runtime_client()
    small = request_body([(1, "fine")])
    with Stubber(runtime) as stub:
        stub.add_response("invoke_endpoint", ok_response(small), expected_params={
            "EndpointName": ENDPOINT, "ContentType": ANY, "Accept": ANY, "Body": small})  # fmt: skip
        results = Classifier(endpoint_name=ENDPOINT, runtime=runtime, payload_limit=1000).classify(
            ["y" * 2000, "fine"], LABELS
        )
    assert "over the endpoint's payload limit of 1,000 bytes" in results[0].error
    assert results[1].label == "Health"


class FakeEndpoint:
    """A runtime client whose endpoint answers concurrently, slowly and out of order, and throttles at random."""

    def __init__(self, throttle_every: int = 3) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.throttle_every = throttle_every
        self.records_sent: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def invoke_endpoint(self, *, EndpointName, ContentType, Accept, Body):
        from botocore.exceptions import ClientError

        with self.lock:
            self.calls += 1
            call = self.calls
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(random.uniform(0, 0.01))
            if call % self.throttle_every == 0:
                raise ClientError(
                    {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}, "InvokeEndpoint")  # fmt: skip
            with self.lock:
                self.records_sent.extend(json.loads(line)["id"] for line in Body.split(b"\n"))
            answer = model_answer(Body)
            return {"Body": StreamingBody(io.BytesIO(answer), len(answer))}
        finally:
            with self.lock:
                self.in_flight -= 1


def test_a_thousand_texts_with_bad_records_come_back_complete_and_in_order_under_concurrency():
    # Given 1,000 texts: every 7th rejected by the model, every 11th empty, every 50th not a string (a missing value),
    # against an endpoint that answers concurrently and throttles every third request
    texts: list = [f"bad {i}" if i % 7 == 0 else f"text number {i}" for i in range(1000)]
    for i in range(0, 1000, 11):
        texts[i] = "  "
    for i in range(0, 1000, 50):
        texts[i] = None
    ids = [f"row-{i}" for i in range(1000)]
    endpoint = FakeEndpoint()
    classifier = Classifier(endpoint_name=ENDPOINT, runtime=endpoint, concurrency=4, sleep=lambda s: None)
    # When classified
    results = classifier.classify(texts, LABELS, ids=ids)
    # Then one result per text, in order, bad ones as errors; each good record was answered exactly once
    assert [r.id for r in results] == ids
    for text, result in zip(texts, results, strict=True):
        if text is None:
            assert result.error.startswith("the text is a NoneType")
        elif not text.strip():
            assert result.error == "the text is empty: give the text to classify"
        elif text.startswith("bad"):
            assert result.error == "the model rejected this record" and result.sequence == text
        else:
            assert result.sequence == text and result.label == "Health"
    sent = [i for i, t in enumerate(texts) if t is not None and t.strip()]
    assert sorted(endpoint.records_sent) == sent  # nothing duplicated, nothing lost
    assert 1 < endpoint.max_in_flight <= 4


def test_one_text_gives_one_classification_and_labels_may_be_a_comma_separated_string():
    endpoint = FakeEndpoint(throttle_every=10**9)
    result = Classifier(endpoint_name=ENDPOINT, runtime=endpoint).classify("run a marathon", "Health, Career")
    assert isinstance(result, Classification)
    assert result.id is None and result.labels == LABELS and result.score == 0.6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": []}, "Labels missing"),
        ({"labels": LABELS, "hypothesis_template": "no placeholder"}, r"has no \{\}"),
        ({"labels": LABELS, "ids": ["a"]}, "ids has 1 values for 2 texts"),
        ({"labels": LABELS, "ids": ["a", float("nan")]}, r"ids\[1\]: the id is nan"),
    ],
)
def test_bad_arguments_are_one_line_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        Classifier(endpoint_name=ENDPOINT, runtime=FakeEndpoint()).classify(["a", "b"], **kwargs)


def test_results_frame_without_pandas_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    results = Classifier(endpoint_name=ENDPOINT, runtime=FakeEndpoint(10**9)).classify(["a"], LABELS)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    from zstc.errors import ZstcError

    with pytest.raises(ZstcError, match=r"pandas is not installed: `pip install 'zero-shot-sagemaker\[pandas\]'`"):
        results.to_pandas()
    assert results[0].label == "Health"  # everything else works without pandas


def test_the_stock_handler_gets_one_json_record_per_request():
    # Given an endpoint with the toolkit's stock handler (model_source=hub): one application/json object per request
    runtime = runtime_client()
    with Stubber(runtime) as stub:
        for text in ("a", "b"):
            body = json.dumps({"inputs": text, "parameters": {"candidate_labels": LABELS, "multi_label": False}})
            answer = json.dumps({"sequence": text, "labels": ["Career", "Health"], "scores": [0.9, 0.1]}).encode()
            stub.add_response(
                "invoke_endpoint",
                {"Body": StreamingBody(io.BytesIO(answer), len(answer))},
                expected_params={"EndpointName": ENDPOINT, "ContentType": "application/json",
                                 "Accept": "application/json", "Body": body.encode()},
            )  # fmt: skip
        results = Classifier(endpoint_name=ENDPOINT, runtime=runtime, single_record=True, concurrency=1).classify(
            ["a", "b"], LABELS
        )
        stub.assert_no_pending_responses()
    assert [(r.sequence, r.label) for r in results] == [("a", "Career"), ("b", "Career")]


def test_a_deployed_endpoint_without_a_region_is_one_actionable_line(monkeypatch, tmp_path):
    from zstc.errors import AwsSetupError

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AwsSetupError, match="No AWS region configured"):
        Classifier(endpoint_name=ENDPOINT)


def test_a_local_endpoint_needs_neither_region_nor_credentials(monkeypatch, tmp_path):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    classifier = Classifier(endpoint_url="http://127.0.0.1:9", endpoint_name=ENDPOINT, max_attempts=1)
    # nothing listens on port 9: the request fails as a connection error, not as missing credentials
    result = classifier.classify(["a"], LABELS)[0]
    assert result.error.startswith("gave up after 1 attempts") and "Could not connect" in result.error
