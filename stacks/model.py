"""The SageMaker model: the Hugging Face inference container with the zero-shot model and our handler."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.checks import checkov_skip
from stacks.network import Network


class SageMakerModel(Construct):
    """One ``AWS::SageMaker::Model`` (the deployed resource; the model the handler loads in the container is
    ``ZeroShotModel`` in ``model/code/inference.py``).

    ``model_data_url`` (an S3 URL of a ``model.tar.gz``) carries the weights and our handler; without it the
    container downloads ``HF_MODEL_ID`` at ``HF_MODEL_REVISION`` from the Hub when it starts, which needs internet
    egress and so is incompatible with ``network_isolation``. With a ``network`` the container runs in its isolated
    subnets. The model depends on the execution role *and its policy*, so the policy exists before SageMaker
    validates the role. A model without network isolation must say why (``isolation_exception``); the reason is
    recorded as the skip of checkov's isolation check.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        role: iam.IRole,
        image: str,
        environment: Mapping[str, str],
        model_data_url: str | None,
        network_isolation: bool,
        isolation_exception: str | None = None,
        network: Network | None = None,
    ) -> None:
        super().__init__(scope, id_)
        if network_isolation and model_data_url is None:
            raise ValueError("A network-isolated model cannot download from the Hub: give model_data_url")
        vpc_config = None
        if network is not None:
            vpc_config = sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[network.security_group.security_group_id], subnets=network.subnet_ids
            )
        self.resource = sagemaker.CfnModel(
            self,
            "Resource",
            execution_role_arn=role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                mode="SingleModel",
                model_data_url=model_data_url,
                environment=dict(sorted(environment.items())),
            ),
            enable_network_isolation=network_isolation,
            vpc_config=vpc_config,
        )
        if not network_isolation:
            if not isolation_exception:
                raise ValueError("A model without network isolation needs the reason (isolation_exception)")
            checkov_skip(self.resource, "CKV_AWS_370", isolation_exception)
        self.resource.node.add_dependency(role)
        self.model_name = self.resource.attr_model_name
        self.model_arn = self.resource.ref  # Ref of an AWS::SageMaker::Model is its ARN
