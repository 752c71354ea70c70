"""What the trigger needs so that every file gets a status (#13 item 4): the failure topic (publish only), the queue's
maxReceiveCount in its environment, and 404s for inputs deleted since their event (ListBucket on input/)."""

from __future__ import annotations

from typing import Any

from tests.infrastructure.test_batch import as_list, env_of, logical_id_of, statements_of


def test_the_trigger_knows_the_failure_topic(synth: Any) -> None:
    # (its grant, sns:Publish on that topic only: test_batch.test_the_publish_grant_gives_publish_on_the_failure_...)
    s = synth()
    topic = {"Ref": logical_id_of(s, "AWS::SNS::Topic", "BatchFailureTopic")}
    assert env_of(s, "BatchTrigger")["TOPIC_ARN"] == topic


def test_the_trigger_knows_the_queues_max_receive_count(synth: Any) -> None:
    for overrides in ({}, {"batch_patience_hours": 72}):
        s = synth(**overrides)
        (queue,) = [q for q in s.resources("AWS::SQS::Queue").values() if "RedrivePolicy" in q["Properties"]]
        count = queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        assert env_of(s, "BatchTrigger")["MAX_RECEIVE_COUNT"] == str(count)


def test_the_trigger_may_list_only_manifests_and_inputs(synth: Any) -> None:
    s = synth()
    (listing,) = [st for st in statements_of(s, "BatchTrigger") if "s3:ListBucket" in as_list(st["Action"])]
    assert as_list(listing["Action"]) == ["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["manifests/*", "input/*"]}}
