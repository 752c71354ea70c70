"""The Hugging Face inference container image, resolved with the SageMaker SDK's offline image-URI lookup.

The image's registry account differs by region, so the template carries a region → image mapping generated from
the SDK's bundled data (``sagemaker.core.image_uris``; no hand-written table, no AWS call) and picks the entry of
the region it is deployed to. A region the SDK has no image for has no entry: CloudFormation then fails the
deployment at once ("Mapping key not found") instead of pulling another region's image.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Final

from aws_cdk import Aws, CfnMapping, Fn, Stack, Token
from constructs import Construct

from stacks.config import ConfigError, is_gpu

# The Hugging Face inference DLC the model runs in (the handler's tests use the same transformers version).
TRANSFORMERS_VERSION: Final = "4.51.3"
PYTORCH_VERSION: Final = "2.6.0"
PY_VERSION: Final = "py312"
FRAMEWORK: Final = "huggingface"
# Instance types standing for each processor family in the SDK lookup.
_PROBE_INSTANCE: Final = {"cpu": "ml.m5.xlarge", "gpu": "ml.g5.xlarge"}


def processor(instance_type: str) -> str:
    """``cpu`` or ``gpu``: which build of the container an instance type needs."""
    return "gpu" if is_gpu(instance_type) else "cpu"


@functools.cache
def supported_regions() -> tuple[str, ...]:
    from sagemaker.core import image_uris

    config_file = Path(image_uris.__file__).parent / "image_uri_config" / f"{FRAMEWORK}.json"
    config = json.loads(config_file.read_text())
    version = config["inference"]["versions"][TRANSFORMERS_VERSION][f"pytorch{PYTORCH_VERSION}"]
    return tuple(sorted(version["registries"]))


@functools.cache
def image_uri(region: str, proc: str) -> str:
    """The image URI for a region and processor family (``cpu``/``gpu``), from the SDK's bundled config."""
    from sagemaker.core import image_uris

    if region not in supported_regions():
        raise ConfigError(
            f"Invalid value for 'region': {region!r}. The SageMaker SDK knows no Hugging Face inference image "
            f"(transformers {TRANSFORMERS_VERSION}) there. Use one of {', '.join(supported_regions())}, "
            "e.g. -c region=eu-west-1"
        )
    return str(
        image_uris.retrieve(
            FRAMEWORK,
            region=region,
            version=TRANSFORMERS_VERSION,
            base_framework_version=f"pytorch{PYTORCH_VERSION}",
            py_version=PY_VERSION,
            instance_type=_PROBE_INSTANCE[proc],
            image_scope="inference",
        )
    )


class InferenceImages(Construct):
    """Region-resolved image URIs and ECR repository ARNs of the Hugging Face inference container."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        mapping: dict[str, dict[str, str]] = {}
        for region in supported_regions():
            cpu, gpu = image_uri(region, "cpu"), image_uri(region, "gpu")
            account = cpu.split(".", 1)[0]
            mapping[region] = {"cpu": cpu, "gpu": gpu, "account": account}
        self._mapping = CfnMapping(self, "HuggingFaceInferenceImage", mapping=mapping, lazy=True)
        self.repository_name = image_uri("us-east-1", "cpu").split("/", 1)[1].split(":", 1)[0]

    def _bound_region(self) -> str | None:
        region = Stack.of(self).region
        return None if Token.is_unresolved(region) else region

    def uri(self, instance_type: str) -> str:
        """The image for ``instance_type``'s processor family in the deployment region."""
        region = self._bound_region()
        if region is not None:  # a region-bound stack: the literal URI (validated against the SDK's regions)
            return image_uri(region, processor(instance_type))
        return self._mapping.find_in_map(Aws.REGION, processor(instance_type))

    @property
    def repository_arn(self) -> str:
        stack = Stack.of(self)
        region = self._bound_region()
        account = (
            image_uri(region, "cpu").split(".", 1)[0]
            if region is not None
            else self._mapping.find_in_map(Aws.REGION, "account")
        )
        return Fn.join(
            "", [f"arn:{stack.partition}:ecr:{stack.region}:", account, f":repository/{self.repository_name}"]
        )
