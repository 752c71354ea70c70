"""Fixtures of the handler tests: the tiny model loaded once through model_fn, and the pipeline it must match."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def handler():
    """Our handler module (model/code/inference.py, on pytest's pythonpath)."""
    import inference

    return inference


@pytest.fixture(scope="session")
def loaded(handler, tiny_model_dir):
    """The tiny model loaded by model_fn, with a small batch size so requests span several batches."""
    model = handler.model_fn(str(tiny_model_dir))
    model.batch_size = 4
    return model


@pytest.fixture(scope="session")
def zero_shot_pipeline(tiny_model_dir):
    """transformers' zero-shot pipeline on the same model: the reference for scores."""
    from transformers import pipeline

    return pipeline("zero-shot-classification", model=str(tiny_model_dir), device=-1)


@pytest.fixture
def invoke(handler, loaded) -> Callable[..., Any]:
    """Call transform_fn as the toolkit does and decode the answer (a JSON value, or a list for JSON Lines)."""

    def _invoke(body: Any, content_type: str = "application/json", accept: str = "application/json", lines=None):
        if isinstance(body, dict | list) and lines is None:
            body = json.dumps(body)
        elif lines is not None:
            body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        text = handler.transform_fn(loaded, body, content_type, accept)
        if lines is not None:
            return [json.loads(line) for line in text.split("\n")]
        return json.loads(text)

    return _invoke


@pytest.fixture(scope="session")
def resolution_tweets() -> list[tuple[str, str]]:
    """(text, category) of the shared New Year's resolutions tweets (real-world text: emoji, URLs, mojibake)."""
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"
    if not path.is_file():
        pytest.skip(f"shared data set not found at {path}")
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return [(row["text"], row["Resolution_Category"]) for row in csv.DictReader(handle)]
