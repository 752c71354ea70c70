"""serving_environment: the SageMaker model's environment for this workload."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stacks.serving_env import gpus, serving_environment, vcpus


def test_cpu_instance_gets_one_worker_with_a_thread_per_physical_core():
    # Given a 4-vCPU CPU instance (2 physical cores)
    # When the environment is computed
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=32, timeout_seconds=3600)
    # Then one worker uses both cores
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"


def test_multi_gpu_instance_gets_one_worker_per_gpu_and_splits_the_cores():
    env = serving_environment(instance_type="ml.g5.12xlarge", batch_size=64, timeout_seconds=600)
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "4"
    assert env["OMP_NUM_THREADS"] == "6"  # 48 vCPUs = 24 cores over 4 workers


def test_single_gpu_instance_gets_one_worker():
    env = serving_environment(instance_type="ml.g4dn.xlarge", batch_size=64, timeout_seconds=600)
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"


def test_timeout_is_set_in_seconds_and_in_whole_minutes():
    # Multi Model Server 1.1 multiplies default_response_timeout by 60; the _SECONDS variant wins when set.
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=32, timeout_seconds=90)
    assert env["SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"] == "90"
    assert env["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "2"


def test_request_limit_admits_the_largest_batch_transform_payload():
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=32, timeout_seconds=60)
    assert int(env["SAGEMAKER_MAX_PAYLOAD_IN_MB"]) >= 100
    assert int(env["MMS_MAX_RESPONSE_SIZE"]) >= 6 * 100 * 1024 * 1024


def test_handler_settings_are_passed_through():
    env = serving_environment(instance_type="ml.c5.2xlarge", batch_size=17, timeout_seconds=60)
    assert env["ZSTC_BATCH_SIZE"] == "17"
    assert env["HF_TASK"] == "zero-shot-classification"
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"


def test_every_value_is_a_string():
    env = serving_environment(instance_type="ml.p3.8xlarge", batch_size=32, timeout_seconds=60)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in env.items())


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [("ml.t2.medium", 2), ("ml.m5.large", 2), ("ml.m5.xlarge", 4), ("ml.c5.9xlarge", 36), ("ml.p4d.24xlarge", 96)],
)
def test_vcpus_follow_the_size_name(instance_type, expected):
    assert vcpus(instance_type) == expected


def test_cpu_families_have_no_gpu():
    assert gpus("ml.c6i.4xlarge") == 0
    assert gpus("ml.p3.16xlarge") == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_type": "m5.xlarge", "batch_size": 32, "timeout_seconds": 60}, "not a SageMaker instance type"),
        ({"instance_type": "ml.inf2.xlarge", "batch_size": 32, "timeout_seconds": 60}, "Neuron"),
        ({"instance_type": "ml.m5.huge", "batch_size": 32, "timeout_seconds": 60}, "size"),
        ({"instance_type": "ml.m5.xlarge", "batch_size": 0, "timeout_seconds": 60}, "batch_size"),
        ({"instance_type": "ml.m5.xlarge", "batch_size": 32, "timeout_seconds": 3601}, "timeout_seconds"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        serving_environment(**kwargs)


def test_the_deployments_hypothesis_template_is_passed_to_the_handler():
    env = serving_environment(
        instance_type="ml.m5.xlarge",
        batch_size=16,
        timeout_seconds=60,
        hypothesis_template="この文章は{}に関するものです。",
    )
    assert env["ZSTC_HYPOTHESIS_TEMPLATE"] == "この文章は{}に関するものです。"


def test_without_a_template_the_handler_keeps_its_default():
    assert "ZSTC_HYPOTHESIS_TEMPLATE" not in serving_environment(
        instance_type="ml.m5.xlarge", batch_size=16, timeout_seconds=60
    )


@pytest.mark.parametrize("template", ["no braces", "{} {}", "{0:>99}"])
def test_a_template_the_handler_would_refuse_is_refused_here(template):
    with pytest.raises(ValueError, match="hypothesis_template"):
        serving_environment(
            instance_type="ml.m5.xlarge", batch_size=16, timeout_seconds=60, hypothesis_template=template
        )


# --- the Hub, for a container that cannot reach it -----------------------------------------------------------------


@pytest.mark.parametrize("instance_type", ["ml.m5.xlarge", "ml.g5.xlarge"])
def test_an_offline_container_never_tries_the_hub(instance_type):
    online = serving_environment(instance_type=instance_type, batch_size=16, timeout_seconds=60)
    offline = serving_environment(instance_type=instance_type, batch_size=16, timeout_seconds=60, hub_offline=True)

    assert offline == {**online, "HF_HUB_OFFLINE": "1"}  # that variable and nothing else


def test_a_container_that_can_reach_the_hub_is_left_online():
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=16, timeout_seconds=60)

    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env


def transformers_offline_mode(environment: dict[str, str]) -> bool:
    """``transformers.utils.is_offline_mode()`` in a fresh interpreter with ``environment`` (read at import)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    script = "from transformers.utils import is_offline_mode; print(is_offline_mode())"
    done = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **environment}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


def test_transformers_reads_the_variable_as_offline_mode():
    # The container's transformers (4.51.3, the version requirements-dev.txt pins) takes its offline mode from it.
    env = serving_environment(instance_type="ml.m5.xlarge", batch_size=16, timeout_seconds=60, hub_offline=True)

    assert transformers_offline_mode({"HF_HUB_OFFLINE": env["HF_HUB_OFFLINE"]}) is True
    assert transformers_offline_mode({}) is False


# --- batching per instance family ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("instance_type", "tokens"),
    [("ml.g4dn.xlarge", "8192"), ("ml.g5.2xlarge", "16384"), ("ml.g6e.xlarge", "32768"), ("ml.p4d.24xlarge", "32768")],
)
def test_gpu_instances_batch_by_their_familys_token_budget(instance_type, tokens):
    env = serving_environment(instance_type=instance_type, batch_size=16, timeout_seconds=60)
    assert env["ZSTC_MAX_BATCH_TOKENS"] == tokens
    assert "ZSTC_DTYPE" not in env  # auto: float16 on GPU


@pytest.mark.parametrize("instance_type", ["ml.m5.xlarge", "ml.c6i.4xlarge", "ml.m5d.large"])
def test_cpu_instances_keep_fixed_pair_batches(instance_type):
    env = serving_environment(instance_type=instance_type, batch_size=16, timeout_seconds=60)
    assert "ZSTC_MAX_BATCH_TOKENS" not in env
    assert env["ZSTC_BATCH_SIZE"] == "16"


def test_an_explicit_token_budget_wins_over_the_familys():
    env = serving_environment(instance_type="ml.g4dn.xlarge", batch_size=16, timeout_seconds=60, max_batch_tokens=4096)
    assert env["ZSTC_MAX_BATCH_TOKENS"] == "4096"


@pytest.mark.parametrize("tokens", [0, 2_000_000])
def test_a_token_budget_out_of_range_is_refused(tokens):
    with pytest.raises(ValueError, match="max_batch_tokens"):
        serving_environment(instance_type="ml.g5.xlarge", batch_size=16, timeout_seconds=60, max_batch_tokens=tokens)


def test_every_gpu_family_has_a_default_token_budget():
    from stacks.config import GPU_FAMILIES
    from stacks.serving_env import GPU_BATCH_TOKENS, HandlerBatching, default_batching

    assert set(GPU_BATCH_TOKENS) >= GPU_FAMILIES
    assert default_batching("ml.g5.xlarge") == HandlerBatching(batch_size=16, max_batch_tokens=16384)
    assert default_batching("ml.m5.xlarge", batch_size=8) == HandlerBatching(batch_size=8, max_batch_tokens=None)
