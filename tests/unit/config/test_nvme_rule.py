"""The volume-key rule: SageMaker refuses a volume KMS key on instance types with local instance storage.

The rule is the SageMaker Python SDK's ``volume_size_supported``; these tests pin our copy to it, case by case and
over every instance type botocore's SageMaker model lists. What the endpoint config does with it:
tests/infrastructure/test_endpoint_volume_key.py.
"""

from __future__ import annotations

import pytest

from stacks.config import has_nvme_storage


def sagemaker_instance_types() -> list[str]:
    """Every transform and endpoint instance type in the installed botocore's SageMaker model (local files only)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return [
        value
        for shape in ("TransformInstanceType", "ProductionVariantInstanceType")
        for value in model.shape_for(shape).enum
    ]


@pytest.mark.parametrize(
    ("instance_type", "local_storage"),
    [
        # a "d" in the family
        ("ml.m5d.large", True),
        ("ml.m5d.24xlarge", True),
        ("ml.c5d.xlarge", True),
        ("ml.c6id.2xlarge", True),
        ("ml.r5d.4xlarge", True),
        ("ml.m6gd.xlarge", True),
        ("ml.g4dn.xlarge", True),
        ("ml.p3dn.24xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.p4de.24xlarge", True),
        # families the SDK names
        ("ml.g5.xlarge", True),
        ("ml.g5.48xlarge", True),
        ("ml.g6.xlarge", True),
        ("ml.g6e.12xlarge", True),
        ("ml.p5.48xlarge", True),
        ("ml.p5e.48xlarge", True),
        ("ml.trn1.32xlarge", True),
        ("ml.trn1n.32xlarge", True),
        ("ml.trn2.48xlarge", True),
        ("ml.g7e.2xlarge", True),
        ("ml.p6-b200.48xlarge", True),
        # EBS only
        ("ml.inf2.xlarge", False),
        ("ml.inf2.48xlarge", False),
        ("ml.m5.xlarge", False),
        ("ml.m5.large", False),
        ("ml.c5.2xlarge", False),
        ("ml.c6i.xlarge", False),
        ("ml.m7i.xlarge", False),
        ("ml.p3.2xlarge", False),
        ("ml.t2.medium", False),
        ("ml.g7.2xlarge", False),  # g7e has local storage, g7 does not (the SDK names g7e only)
        ("ml.p6e-gb200.36xlarge", False),
    ],
)
def test_volume_key_rule_per_instance_type(instance_type, local_storage):
    assert has_nvme_storage(instance_type) is local_storage


def test_the_rule_agrees_with_the_installed_sagemaker_sdk_on_every_instance_type_sagemaker_lists():
    from sagemaker.core.common_utils import volume_size_supported

    instance_types = sagemaker_instance_types()
    assert len(instance_types) > 100  # botocore's model really was read
    disagreements = [t for t in instance_types if has_nvme_storage(t) is volume_size_supported(t)]
    assert disagreements == []
