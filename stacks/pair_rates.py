"""The pair rate of each batch instance type for the configured model, decided at synthesis.

The trigger sizes each job's mini-batches from it (``zstc_contract.sizing``); the offline emulation times its
invocations with it. The lookup and the table are ``zstc_contract.rates`` (``zstc/data/throughput.json``).
"""

from __future__ import annotations

from stacks.config import Settings, is_gpu
from stacks.serving_env import vcpus
from zstc_contract.rates import DEFAULT_SHAPE, Rate, catalogue_shape, read_entries, select_rate


def physical_cores(instance_type: str) -> int:
    """Physical cores of an instance type (SageMaker's x86 vCPUs are hyper-threads: two per core)."""
    return max(1, vcpus(instance_type) // 2)


def model_shape(model_id: str) -> str:
    """The benchmark shape of a model: the catalogue's, else the default model's (bart-large, a conservative rate
    for models of its size and smaller)."""
    return catalogue_shape(model_id) or DEFAULT_SHAPE


def batch_rate(settings: Settings, instance_type: str) -> Rate | None:
    """The table's pair rate of ``settings.model_id`` on ``instance_type`` (None: the table has no figure)."""
    return select_rate(
        instance_type,
        model_shape(settings.model_id),
        read_entries(),
        physical_cores=physical_cores,
        is_gpu=is_gpu,
    )
