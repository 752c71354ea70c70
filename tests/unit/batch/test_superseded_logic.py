"""Pure logic of a superseded job's record: which input version a status record is of, and when a record in place
is the newer version's result (the superseded job then writes nothing)."""

from __future__ import annotations

from functions.job_outcome.logic import newer_result_in_place, record_version
from zstc_contract.status import OutcomeDetail, StatusRecord

INPUT = "s3://b/input/a.jsonl"


def failed(version_id: str | None) -> StatusRecord:
    return StatusRecord.job_failed(
        input=INPUT, job_name="j", job_status="Failed", finished_at=None, instance_type=None, reason="r",
        detail=OutcomeDetail(version_id=version_id),
    )  # fmt: skip


def test_the_outcome_functions_records_are_of_the_version_their_job_read() -> None:
    assert record_version(failed("v2")) == "v2"
    assert record_version(failed(None)) is None


def test_the_triggers_records_are_of_the_version_their_revision_names() -> None:
    assert record_version(StatusRecord.skipped(input=INPUT, revision="v-v2", reason="empty")) == "v2"
    assert record_version(StatusRecord.rejected(input=INPUT, revision="e-etag", reason="r")) is None


def test_a_record_of_the_current_version_in_either_place_is_the_newer_result() -> None:
    assert newer_result_in_place([None, failed("v2")], "v2")
    assert newer_result_in_place([failed("v2").as_superseded(), None], "v2")
    assert newer_result_in_place([StatusRecord.skipped(input=INPUT, revision="v-v2", reason="empty")], "v2")


def test_records_of_other_versions_or_none_leave_the_place_to_the_superseded_job() -> None:
    assert not newer_result_in_place([None, None], "v2")
    assert not newer_result_in_place([failed("v1"), failed(None)], "v2")
    # an unknown current version matches nothing, not even a record without a version
    assert not newer_result_in_place([failed(None)], None)
