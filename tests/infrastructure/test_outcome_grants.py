"""The job-outcome function's grants for per-job outputs (#13 item 2): read the job folders and the inputs' versions,
publish ``output/<file>.out`` and the status records, and nothing that writes or deletes an input."""

from __future__ import annotations

import json
from typing import Any

from tests.infrastructure.test_batch import as_list, plain, statements_of


def grants(s: Any) -> dict[str, tuple[set[str], list[str]]]:
    """Sid → (actions, resources as plain strings) of the outcome function's role."""
    return {
        st["Sid"]: (set(as_list(st["Action"])), sorted(plain(r) for r in as_list(st["Resource"])))
        for st in statements_of(s, "BatchOutcome")
        if "Sid" in st
    }


def test_the_outcome_function_reads_inputs_and_job_folders_and_publishes_only_outputs_and_status(synth) -> None:
    found = grants(synth())
    actions, resources = found["ReadInputVersions"]
    assert actions == {"s3:GetObject"} and len(resources) == 1 and resources[0].endswith("/input/*")
    actions, resources = found["PublishOutputs"]
    assert actions == {"s3:PutObject", "s3:DeleteObject"} and [r.rsplit("/", 2)[-2:] for r in resources] == [
        ["output", "*.out"]
    ]
    actions, resources = found["WriteStatusRecords"]
    # read too: a superseded job writes its record only if the key is as it read it (conditional put and delete)
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert all(r.endswith(".status.json") for r in resources) and len(resources) == 2
    # a deleted input or a missing status record answers 404, not 403: ListBucket on these prefixes, nothing else
    (listing,) = [st for st in statements_of(synth(), "BatchOutcome") if st.get("Sid") == "ListOutputsAndInputs"]
    assert listing["Action"] == "s3:ListBucket"
    assert sorted(listing["Condition"]["StringLike"]["s3:prefix"]) == ["errors/*", "input/*", "output/*"]
    _, read = found["ReadManifestsAndOutputs"]
    assert any(r.endswith("/output/*") for r in read)  # the job folders lie under output/
    for statement in statements_of(synth(), "BatchOutcome"):
        if {"s3:PutObject", "s3:DeleteObject"} & set(as_list(statement["Action"])):
            assert all("/input/" not in json.dumps(r) for r in as_list(statement["Resource"])), statement
