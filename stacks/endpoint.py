"""The real-time endpoint: serverless (default) or provisioned instances with target-tracking autoscaling."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.checks import acknowledge
from stacks.config import Settings, has_nvme_storage
from stacks.storage import PREFIXES

VARIANT = "AllTraffic"
# SageMaker's endpoint names: at most 63 letters, digits and single hyphens between them.
ENDPOINT_NAME_LENGTH: Final = 63
_HYPHENS: Final = re.compile(r"-+")


def endpoint_name(settings: Settings) -> str:
    """The endpoint's name, computed from the settings: the one place it is declared.

    The endpoint lives in a stack of its own (``stacks/endpoint_stack.py``), deployed after the main stack; the main
    stack publishes this name (output ``EndpointName``, which ``zstc`` reads) and watches it (alarms, dashboard)
    without a cross-stack reference, so nothing of the endpoint stack can block an update of the main stack. It is
    the main stack's name (stack names are unique per account and region, as endpoint names are), with runs of
    hyphens folded and, past 63 characters, cut and suffixed with 8 hex digits of its SHA-256.
    """
    name = _HYPHENS.sub("-", settings.stack_name).strip("-")
    if len(name) <= ENDPOINT_NAME_LENGTH:
        return name
    digest = hashlib.sha256(settings.stack_name.encode()).hexdigest()[:8]
    return f"{name[: ENDPOINT_NAME_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"


class InferenceEndpoint(Construct):
    """Endpoint config + endpoint for ``model``, named :func:`endpoint_name`.

    - ``serverless``: memory ``serverless_memory_mb``, at most ``serverless_max_concurrency`` concurrent
      invocations; scales to zero (pay per request, cold starts after idle periods).
    - ``provisioned``: ``endpoint_instance_type`` instances, between ``endpoint_min_instances`` and
      ``endpoint_max_instances``, scaled to keep ``endpoint_target_invocations`` invocations per instance per
      minute; optional data capture of requests and responses to ``capture/`` under the stack key.
    The endpoint config carries the stack key: SageMaker encrypts the ML storage volume of provisioned instances with
    it and, for serverless, its copy of the container image (the KmsKeyId of a serverless endpoint config, SageMaker
    developer guide "Create an endpoint configuration" for Serverless Inference). The one exception: instance types
    with local NVMe storage, where SageMaker rejects a volume key and the hardware encrypts the instance store
    (:func:`stacks.config.has_nvme_storage`).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: Settings,
        model: sagemaker.CfnModel,
        key: kms.IKey,
        bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, id_)
        serverless = settings.endpoint_mode == "serverless"
        if serverless:
            variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT,
                model_name=model.attr_model_name,
                serverless_config=sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=settings.serverless_memory_mb,
                    max_concurrency=settings.serverless_max_concurrency,
                ),
            )
        else:
            variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=VARIANT,
                model_name=model.attr_model_name,
                instance_type=settings.endpoint_instance_type,
                initial_instance_count=settings.endpoint_min_instances,
                initial_variant_weight=1.0,
            )
        encrypt_volume = serverless or not has_nvme_storage(settings.endpoint_instance_type)
        data_capture = None
        if settings.data_capture and not serverless:
            data_capture = sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=True,
                initial_sampling_percentage=settings.data_capture_percent,
                destination_s3_uri=bucket.s3_url_for_object(PREFIXES.capture.rstrip("/")),
                kms_key_id=key.key_arn,
                capture_options=[
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                    sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
                ],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json", "application/jsonlines"]
                ),
            )
        self.config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[variant],
            kms_key_id=key.key_arn if encrypt_volume else None,
            data_capture_config=data_capture,
        )
        self.config.node.add_dependency(model)
        if not encrypt_volume:
            reason = (
                f"{settings.endpoint_instance_type} has local NVMe instance storage: SageMaker rejects a volume KMS "
                "key there; the instance store is encrypted by the hardware (AES-256)."
            )
            acknowledge(
                self.config,
                {
                    "HIPAA.Security-SageMakerEndpointConfigurationKMSKeyConfigured": reason,
                    "NIST.800.53.R5-SageMakerEndpointConfigurationKMSKeyConfigured": reason,
                },
            )
        # A fixed name is safe here: only a change of EndpointName replaces an endpoint, and the name follows the
        # stack's name, which never changes for a deployed stack.
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name(settings),
            endpoint_config_name=self.config.attr_endpoint_config_name,
        )
        self.endpoint.node.add_dependency(self.config)
        self.endpoint_name = self.endpoint.attr_endpoint_name

        if not serverless:
            target = appscaling.ScalableTarget(
                self,
                "ScalableTarget",
                service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
                resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
                scalable_dimension="sagemaker:variant:DesiredInstanceCount",
                min_capacity=settings.endpoint_min_instances,
                max_capacity=settings.endpoint_max_instances,
            )
            target.node.add_dependency(self.endpoint)
            target.scale_to_track_metric(
                "InvocationsPerInstance",
                target_value=settings.endpoint_target_invocations,
                predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            )
