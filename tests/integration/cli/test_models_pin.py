"""`zstc models pin` against the fake Hugging Face Hub on 127.0.0.1 (the importer's, tests/integration/fake_hub.py).

Each failure the importer would meet at deploy time is met here first, as one line naming the fix.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.integration.fake_hub import MODEL_ID, REVISION, VALID_TOKEN, model_files

REPO_CDK_JSON = Path(__file__).resolve().parents[3] / "cdk.json"


@pytest.fixture
def published(hub, tiny_model_dir, monkeypatch):
    """The tiny NLI model on the fake Hub as commit REVISION, which ``main`` points at; zstc talks to that Hub."""
    hub.add(MODEL_ID, REVISION, model_files(tiny_model_dir), refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
    return hub


def with_config(files: dict[str, bytes], **changes) -> dict[str, bytes]:
    return {**files, "config.json": json.dumps({**json.loads(files["config.json"]), **changes}).encode()}


def one_line_error(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_pin_resolves_main_to_its_commit_and_prints_the_context_to_deploy(zstc, published):
    result = zstc("models", "pin", MODEL_ID)

    assert result.code == 0, result.err
    assert f"{MODEL_ID} @ main = commit {REVISION}: bart (supported)" in result.text
    assert "labels contradiction, neutral, entailment" in result.text
    assert f"cdk deploy -c model_id={MODEL_ID} -c model_revision={REVISION}" in result.out
    # Only the Hub's API and config.json were read: no weight was downloaded
    assert not published.downloads("model.safetensors")


def test_pin_accepts_a_commit_as_revision(zstc, published):
    result = zstc("models", "pin", MODEL_ID, "--revision", REVISION)

    assert result.code == 0, result.err
    assert f"-c model_revision={REVISION}" in result.out


def test_write_sets_only_the_two_context_keys_keeping_the_file_format(zstc, published, tmp_path):
    cdk_json = tmp_path / "cdk.json"
    shutil.copy(REPO_CDK_JSON, cdk_json)
    before = cdk_json.read_text().splitlines()

    result = zstc("models", "pin", MODEL_ID, "--write", "--cdk-json", cdk_json)

    assert result.code == 0, result.err
    after = cdk_json.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.strip() for _, b in changed] == [f'"model_id": "{MODEL_ID}",', f'"model_revision": "{REVISION}",']
    context = json.loads(cdk_json.read_text())["context"]
    assert (context["model_id"], context["model_revision"]) == (MODEL_ID, REVISION)


def test_unknown_model_is_one_line_naming_it_and_the_token_option(zstc, published):
    result = zstc("models", "pin", "acme/no-such-model")

    assert result.code == 2
    line = one_line_error(result)
    assert "Model 'acme/no-such-model' was not found on the Hugging Face Hub (HTTP 401)" in line
    assert "--token-env HF_TOKEN" in line and "hf_token_secret" not in line


def test_unknown_revision_says_how_to_choose_one(zstc, published):
    result = zstc("models", "pin", MODEL_ID, "--revision", "v9")

    assert result.code == 2
    line = one_line_error(result)
    assert f"Revision v9 of model '{MODEL_ID}' was not found" in line and "--revision" in line


def test_gated_model_without_token_says_how_to_pass_one(zstc, hub, tiny_model_dir, monkeypatch):
    hub.add(MODEL_ID, REVISION, model_files(tiny_model_dir), gated=True, refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)

    result = zstc("models", "pin", MODEL_ID)

    assert result.code == 2
    line = one_line_error(result)
    assert "is gated (HTTP 401)" in line and "--token-env HF_TOKEN" in line


def test_gated_model_with_the_token_in_an_environment_variable_is_pinned(zstc, hub, tiny_model_dir, monkeypatch):
    hub.add(MODEL_ID, REVISION, model_files(tiny_model_dir), gated=True, refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
    monkeypatch.setenv("MY_HF_TOKEN", VALID_TOKEN)

    result = zstc("models", "pin", MODEL_ID, "--token-env", "MY_HF_TOKEN")

    assert result.code == 0, result.err
    assert any(r["auth"] == f"Bearer {VALID_TOKEN}" for r in hub.requests if r["kind"] == "resolve")
    assert all(r["auth"] is None for r in hub.downloads())  # never sent to the CDN host


def test_a_token_without_access_names_the_variable(zstc, hub, tiny_model_dir, monkeypatch):
    hub.add(MODEL_ID, REVISION, model_files(tiny_model_dir), gated=True, refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
    monkeypatch.setenv("MY_HF_TOKEN", "hf_other")

    result = zstc("models", "pin", MODEL_ID, "--token-env", "MY_HF_TOKEN")

    assert result.code == 2
    assert "the token in $MY_HF_TOKEN has no access (HTTP 403)" in one_line_error(result)


def test_an_unset_token_variable_is_refused_before_any_request(zstc, published, monkeypatch):
    monkeypatch.delenv("MISSING_TOKEN", raising=False)

    result = zstc("models", "pin", MODEL_ID, "--token-env", "MISSING_TOKEN")

    assert result.code == 2
    assert "Environment variable MISSING_TOKEN is not set" in one_line_error(result)
    assert published.requests == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("no_safetensors", r"has no \*\.safetensors weights \(found: flax_model\.msgpack, pytorch_model\.bin"),
        ("sentiment_labels", r"is not an NLI classifier: its config\.json id2label has no 'entailment' label"),
        ("gpt2", r"has architecture 'gpt2' \(config\.json model_type\), which the zero-shot handler does not support"),
        ("no_tokenizer", r"has no tokenizer files"),
    ],
)
def test_a_revision_the_importer_would_refuse_is_refused_in_one_line(
    zstc, hub, tiny_model_dir, monkeypatch, change, expected
):
    files = model_files(tiny_model_dir)
    if change == "no_safetensors":
        files.pop("model.safetensors")
    elif change == "sentiment_labels":
        files = with_config(files, id2label={"0": "NEGATIVE", "1": "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    elif change == "gpt2":
        files = with_config(files, model_type="gpt2")
    else:
        files = {k: v for k, v in files.items() if k not in ("tokenizer.json", "vocab.json", "merges.txt")}
    hub.add(MODEL_ID, REVISION, files, refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)

    result = zstc("models", "pin", MODEL_ID)

    assert result.code == 2
    line = one_line_error(result)
    assert re.search(expected, line), line
    assert not hub.downloads("model.safetensors")


def test_the_unsupported_architecture_message_lists_the_handlers_architectures(zstc, hub, tiny_model_dir, monkeypatch):
    hub.add(MODEL_ID, REVISION, with_config(model_files(tiny_model_dir), model_type="t5"), refs=("main",))
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)
    supported = json.loads((REPO_CDK_JSON.parent / "model" / "code" / "supported_architectures.json").read_text())

    line = one_line_error(zstc("models", "pin", MODEL_ID))

    assert f"Supported: {', '.join(sorted(supported['model_types']))}." in line


def test_an_unreachable_hub_is_one_line_with_exit_code_1(zstc, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")

    result = zstc("models", "pin", MODEL_ID)

    assert result.code == 1
    line = one_line_error(result)
    assert f"Cannot reach the Hugging Face Hub at http://127.0.0.1:{port}" in line and "HF_ENDPOINT" in line


def test_an_invalid_model_id_is_refused_without_a_request(zstc, published):
    result = zstc("models", "pin", "not a model")

    assert result.code == 2
    assert "Invalid model id 'not a model'" in one_line_error(result)
    assert published.requests == []
