"""The real-time endpoint's own stack, ``<stack_name>-Endpoint``: deployed after the main stack, and alone rolled back
when SageMaker refuses the endpoint.

``CreateEndpoint`` can fail where nothing before it did: a serverless endpoint whose container image is over 10 GB,
an instance type the account has no quota for, a model that does not start. In one stack that rollback took the
bucket, key and batch path of a first deploy with it; here only this stack rolls back and the batch path stays.

What crosses the stacks, and why the endpoint never runs a stale model:

- This stack reads the main stack's outputs with ``Fn::GetStackOutput`` (weak references,
  ``@aws-cdk/core:defaultCrossStackReferences`` in ``cdk.json``: no export locks either stack). A value read that way
  is resolved only when this stack's template changes, so only values that live as long as the main stack's
  resources cross: the bucket's name, the key's ARN, the execution role's ARN, the model importer's ARN and
  (``vpc``) the subnets and security group. Nothing that changes with a model or handler update (a model's name,
  the artifact's URL) does.
- The endpoint has a model of its own (:meth:`stacks.zero_shot_stack.ZeroShotStack.build_model`: the batch model's
  environment for the endpoint's instance type; network-isolated when provisioned, as the batch models are; not for
  serverless, which SageMaker does not isolate). With ``model_source=staged`` its artifact URL comes from a second
  request to the main stack's importer with the same properties (``ModelArtifact``): the importer finds the artifact
  the main stack staged (the main stack is deployed first), copies nothing and returns its URL. Those properties
  (model, revision, handler asset) are in this template, so a new artifact changes this stack too and replaces the
  endpoint's model; deleting this request never deletes the artifact (``RetainData``).
- The main stack never references this one: it publishes the endpoint's name (output ``EndpointName``, read by
  ``zstc``) and watches it (alarms, dashboard) by :func:`stacks.endpoint.endpoint_name`, computed from the settings.
  So ``zstc`` reads one stack as before; while this stack is not deployed (or rolled back), ``zstc`` and ``zstc doctor``
  find no endpoint of that name.
"""

from __future__ import annotations

from typing import Final

import aws_cdk as cdk
from constructs import Construct

from stacks.config import ConfigError, Settings
from stacks.endpoint import InferenceEndpoint
from stacks.images import InferenceImages
from stacks.model_import import SERVICE_TIMEOUT, ModelImport
from stacks.zero_shot_stack import SERVERLESS_MODEL_INSTANCE, ZeroShotStack

SUFFIX: Final = "-Endpoint"
STACK_NAME_LENGTH: Final = 128  # CloudFormation's limit
DESCRIPTION: Final = "Zero-shot text classification on Amazon SageMaker: the real-time endpoint (needs the main stack)"


def endpoint_stack_name(settings: Settings) -> str:
    """``<stack_name>-Endpoint``."""
    name = f"{settings.stack_name}{SUFFIX}"
    if len(name) > STACK_NAME_LENGTH:
        raise ConfigError(
            f"Invalid value for 'stack_name': {settings.stack_name!r} is {len(settings.stack_name)} characters; "
            f"the endpoint's stack adds {SUFFIX!r} and CloudFormation allows {STACK_NAME_LENGTH}. Use at most "
            f"{STACK_NAME_LENGTH - len(SUFFIX)} characters, or -c endpoint_mode=none"
        )
    return name


class EndpointStack(cdk.Stack):
    """The endpoint config, the endpoint (named :func:`stacks.endpoint.endpoint_name`), its model and, when
    provisioned, its autoscaling; depends on ``main`` (deployed after it, destroyed before it)."""

    def __init__(self, scope: Construct, id_: str, *, main: ZeroShotStack, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        settings = main.settings
        if not settings.has_endpoint:
            raise ValueError("endpoint_mode=none: there is no endpoint stack")
        self.add_stack_dependency(main, "The endpoint's model, key, bucket and role are the main stack's")
        provisioned = settings.endpoint_mode == "provisioned"

        model_data_url = main.model_data_url
        if main.model_import is not None:
            model_data_url = _staged_artifact(self, "ModelArtifact", main.model_import)
        self.model = main.build_model(
            self,
            "EndpointModel",
            settings.endpoint_instance_type if provisioned else SERVERLESS_MODEL_INSTANCE,
            model_data_url,
            isolated=provisioned,
            images=InferenceImages(self, "Images"),
        )
        self.endpoint = InferenceEndpoint(
            self, "Endpoint", settings=settings, model=self.model.resource, key=main.key, bucket=main.bucket
        )
        cdk.CfnOutput(self, "EndpointName", value=self.endpoint.endpoint_name, description="Real-time endpoint")


def _staged_artifact(scope: Construct, id_: str, model_import: ModelImport) -> str:
    """The URL of the artifact ``model_import`` stages, asked of its importer with the same properties (the main
    stack's ``Custom::ModelImport`` holds them) but ``RetainData``: deleting this request keeps the artifact, which
    belongs to the main stack. The importer returns the existing artifact's URL without copying."""
    main_request = model_import.resource.node.default_child
    assert isinstance(main_request, cdk.CfnResource)
    # CfnResource keeps its properties in the protected _cfn_properties: ModelImport builds them in one place.
    properties = {k: v for k, v in main_request._cfn_properties.items() if k not in ("ServiceToken", "ServiceTimeout")}
    request = cdk.CustomResource(
        scope,
        id_,
        service_token=model_import.function.function_arn,
        resource_type=main_request.cfn_resource_type,
        service_timeout=SERVICE_TIMEOUT,
        properties={**properties, "RetainData": "true"},
    )
    return request.get_att_string("ModelDataUrl")
