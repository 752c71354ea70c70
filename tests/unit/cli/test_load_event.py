"""tests/events' loader: the recorded file, a fresh copy each time, overrides merged key by key."""

from __future__ import annotations

import json

import pytest

from tests.events import EVENTS, load_event


def test_an_event_is_the_recorded_file_with_or_without_its_suffix() -> None:
    recorded = json.loads((EVENTS / "batch_transform_job_failed.json").read_text(encoding="utf-8"))
    assert load_event("batch_transform_job_failed") == recorded == load_event("batch_transform_job_failed.json")


def test_overrides_merge_into_nested_dicts_and_replace_other_values() -> None:
    recorded = load_event("batch_transform_job_completed")
    event = load_event("batch_transform_job_completed", detail={"TransformJobStatus": "Stopped"}, time="then")
    assert event["detail"]["TransformJobStatus"] == "Stopped" and event["time"] == "then"
    # the rest of the detail is the recorded one, and the recorded event is not changed for the next test
    assert {k: v for k, v in event["detail"].items() if k != "TransformJobStatus"} == {
        k: v for k, v in recorded["detail"].items() if k != "TransformJobStatus"
    }
    assert load_event("batch_transform_job_completed") == recorded


def test_an_unknown_name_lists_the_recorded_events() -> None:
    with pytest.raises(FileNotFoundError, match="model_import_create"):
        load_event("model_import_created")
