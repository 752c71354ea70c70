"""A model that cannot reach the Hub is told so: ``HF_HUB_OFFLINE=1`` on network-isolated models, and only there.

Network isolation is the stack's decision (``ZeroShotStack.build_model``): batch models and a provisioned
endpoint's model are isolated when the weights come from S3 (``staged`` or ``s3``); a serverless endpoint's never is
(SageMaker does not isolate it) and neither is a model that downloads from the Hub (``model_source=hub``). With
``vpc=true`` every model is in the isolated subnets, and isolated.
"""

from __future__ import annotations

from typing import Any

import pytest

VPC = {"endpoint_mode": "provisioned", "vpc": True}


def models(synthesized: Any) -> dict[str, dict[str, Any]]:
    """Each model's isolation flag and environment, the main stack's and the endpoint stack's, by logical id."""
    stacks = [synthesized] + ([synthesized.endpoint] if synthesized.endpoint is not None else [])
    return {
        f"{type(stack.stack).__name__}/{logical_id}": {
            "isolated": resource["Properties"]["EnableNetworkIsolation"],
            "environment": resource["Properties"]["PrimaryContainer"]["Environment"],
        }
        for stack in stacks
        for logical_id, resource in stack.resources("AWS::SageMaker::Model").items()
    }


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"endpoint_mode": "provisioned"},
        VPC,
        {"model_source": "s3", "model_data_url": "s3://my-bucket/m/model.tar.gz"},
    ],
)
def test_isolated_models_are_offline_and_the_others_are_not(synth, context):
    found = models(synth(**context))

    assert any(model["isolated"] for model in found.values())
    for name, model in found.items():
        offline = model["environment"].get("HF_HUB_OFFLINE") == "1"
        assert offline is model["isolated"], name


def test_in_a_vpc_every_model_is_isolated_and_offline(synth):
    found = models(synth(**VPC))

    assert len(found) >= 2  # the batch model and the endpoint's
    assert all(model["isolated"] and model["environment"]["HF_HUB_OFFLINE"] == "1" for model in found.values())


def test_a_model_that_downloads_from_the_hub_stays_online(synth):
    found = models(synth(model_source="hub"))

    assert found
    for model in found.values():
        assert model["isolated"] is False
        assert "HF_HUB_OFFLINE" not in model["environment"]
        assert model["environment"]["HF_MODEL_ID"] == "facebook/bart-large-mnli"


def test_the_variable_is_the_only_difference_between_an_isolated_and_an_open_model(synth):
    # The default: the batch model (ml.m5.xlarge, isolated) and the serverless endpoint's (ml.m5.xlarge's settings)
    found = models(synth())
    isolated = [m["environment"] for m in found.values() if m["isolated"]]
    open_ = [m["environment"] for m in found.values() if not m["isolated"]]

    assert len(isolated) == len(open_) == 1
    assert isolated[0] == {**open_[0], "HF_HUB_OFFLINE": "1"}
