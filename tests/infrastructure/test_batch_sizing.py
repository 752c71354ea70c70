"""Synthesis decides each batch instance type's pair rate; the trigger may read only the inputs' first bytes."""

from __future__ import annotations

import json
from typing import Any

from tests.infrastructure.test_batch import as_list, env_of, plain, statements_of
from zstc_contract.settings import parse_targets


def test_each_target_carries_the_table_rate_of_the_configured_model(synth: Any) -> None:
    s = synth(batch_instance_types="ml.g4dn.xlarge,ml.m5.xlarge,ml.g5.xlarge")
    raw = env_of(s, "BatchTrigger")["BATCH_TARGETS"]
    # the variable is a token-bearing JSON string: resolve only the references, keep the numbers
    text = raw if isinstance(raw, str) else plain(raw)
    targets = {t.instance_type: t for t in parse_targets(text)}
    assert targets["ml.m5.xlarge"].pairs_per_second == 4.144  # measured, bart-large on 2 cores
    assert targets["ml.g4dn.xlarge"].pairs_per_second == 370.0  # estimated from a published T4 figure
    assert targets["ml.g5.xlarge"].pairs_per_second is None  # no A10G row: the trigger keeps the configured payload
    assert json.loads(text)[0]["instance_type"] == "ml.g4dn.xlarge"  # preference order kept


def test_the_trigger_reads_inputs_only_under_the_input_prefix(synth: Any) -> None:
    s = synth()
    buckets = [k for k, v in s.resources("AWS::S3::Bucket").items() if "LoggingConfiguration" in v["Properties"]]
    (bucket,) = buckets  # the data bucket (its access logs go to the log bucket)
    (sample,) = [st for st in statements_of(s, "BatchTrigger") if st.get("Sid") == "SampleInputFiles"]
    assert sorted(as_list(sample["Action"])) == ["s3:GetObject", "s3:GetObjectVersion"]
    assert [plain(r) for r in as_list(sample["Resource"])] == [f"ref-{bucket}.Arn/input/*"]
