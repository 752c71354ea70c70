"""The offline emulation (zstc_local.resources) creates the batch path as the synthesized stack declares it, and runs
the functions with the environment the template gives them."""

from __future__ import annotations

from typing import Any

import pytest

from zstc_local.resources import (
    ResourceNames,
    create_batch_resources,
    max_receive_count,
    notification_filter_rules,
    queue_visibility_seconds,
    stack_settings,
)

CONFIGURATIONS = [{}, {"batch_patience_hours": 72, "batch_window_seconds": 0}]


def _function(raw: dict[str, Any], handler: str) -> dict[str, Any]:
    (fn,) = [
        r["Properties"]
        for r in raw["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == handler
    ]
    return fn


@pytest.mark.parametrize("overrides", CONFIGURATIONS)
def test_the_queue_has_the_stacks_visibility_timeout_and_receive_count(synth, overrides) -> None:
    stack = synth(**overrides)
    settings = stack_settings(overrides)
    queues = [
        q["Properties"] for q in stack.resources("AWS::SQS::Queue").values() if "RedrivePolicy" in q["Properties"]
    ]
    (batch_queue,) = queues  # the only queue with a dead-letter queue
    assert batch_queue["VisibilityTimeout"] == queue_visibility_seconds(settings)
    assert batch_queue["RedrivePolicy"]["maxReceiveCount"] == max_receive_count(settings)


def test_the_notification_filter_is_the_stacks(synth) -> None:
    (notifications,) = synth().resources("Custom::S3BucketNotifications").values()
    (queue,) = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert queue["Events"] == ["s3:ObjectCreated:*"]
    by_name = {rule["Name"]: rule["Value"] for rule in queue["Filter"]["Key"]["FilterRules"]}
    assert by_name == {rule["Name"]: rule["Value"] for rule in notification_filter_rules()}


@pytest.mark.parametrize("overrides", CONFIGURATIONS)
def test_the_emulated_functions_get_the_templates_environment(synth, overrides, monkeypatch) -> None:
    from moto import mock_aws

    raw = synth(**overrides).raw
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        batch = create_batch_resources(
            lambda service: boto3.client(service, region_name="us-east-1"),
            stack_settings(overrides),
            ResourceNames.based_on("zstc-emulated"),
        )
        emulated = {"batch_trigger": batch.trigger_environment(), "job_outcome": batch.outcome_environment()}
    for name, environment in emulated.items():
        deployed = _function(raw, f"{name}.handler.handler")["Environment"]["Variables"]
        # the same variables; where the template has a literal (not a resource's name or ARN), the same value
        assert set(environment) == set(deployed)
        literal = {k: v for k, v in deployed.items() if isinstance(v, str)}
        assert literal == {k: environment[k] for k in literal}
        assert len(literal) >= len(deployed) - 8  # only resource names and ARNs are tokens
