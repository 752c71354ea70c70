"""The SageMaker execution role: what the model containers and transform jobs may do, and nothing more."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.checks import INLINE_POLICY_REASON, acknowledge, logical_id, nag_arn
from stacks.storage import PREFIXES
from zstc_contract.uri import split_uri


class SageMakerExecutionRole(Construct):
    """Role assumed by SageMaker (only for this account) for the model, the endpoint and the transform jobs.

    Grants: read model artifacts (the ``models/`` prefix, or the one ``model_data_url`` object of
    ``model_source=s3``), inputs and manifests; write outputs, errors and data capture; use the stack key;
    pull the Hugging Face inference image from its ECR repository; write the containers' logs and metrics; and,
    with a VPC, manage the network interfaces SageMaker attaches to it.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        bucket: s3.IBucket,
        key: kms.IKey,
        image_repository_arn: str,
        vpc_arn: str | None,
        external_model_url: str | None = None,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            description=f"SageMaker execution role of {stack.stack_name}: model, endpoint, transform jobs",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}
            ),
        )
        for prefix in (PREFIXES.models, PREFIXES.input, PREFIXES.manifests):
            bucket.grant_read(self.role, f"{prefix}*")
        for prefix in (PREFIXES.output, PREFIXES.errors, PREFIXES.capture):
            bucket.grant_put(self.role, f"{prefix}*")
        key.grant_encrypt_decrypt(self.role)
        if external_model_url is not None:
            # model_source=s3: read exactly the user's model.tar.gz (its bucket's KMS key, if any, is the user's to
            # grant, see docs/model-sources.md).
            model_bucket, model_key = split_uri(external_model_url)
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadExternalModel",
                    actions=["s3:GetObject"],
                    resources=[f"arn:{stack.partition}:s3:::{model_bucket}/{model_key}"],
                )
            )

        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PullInferenceImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                resources=[image_repository_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
        log_groups = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/*"
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ContainerLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_groups, f"{log_groups}:log-stream:*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ContainerMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        container_logs = nag_arn(self, "logs", "log-group:/aws/sagemaker/*")
        findings = {
            "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no "
            "resource-level permissions; PutMetricData is limited to the /aws/sagemaker/* namespaces by condition; "
            "with a VPC, network-interface writes are limited to the stack's VPC by condition and ec2:Describe* "
            "supports no resource-level permissions.",
            f"AwsSolutions-IAM5[Resource::{container_logs}]": (
                "SageMaker names the container log groups (/aws/sagemaker/Endpoints/…, /aws/sagemaker/TransformJobs) "
                "at run time; access is limited to that path."
            ),
            f"AwsSolutions-IAM5[Resource::{container_logs}:log-stream:*]": (
                "Log streams are created per instance at run time under /aws/sagemaker/*."
            ),
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "grant_encrypt_decrypt on the stack's own key: "
            "SageMaker generates data keys for output and volume encryption.",
            "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "grant_encrypt_decrypt on the stack's own key.",
            "AwsSolutions-IAM5[Action::s3:GetObject*]": "Read access limited to the models/, input/ and "
            "manifests/ prefixes of the stack's bucket.",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]": "Bucket location/metadata reads of the stack's bucket.",
            "AwsSolutions-IAM5[Action::s3:List*]": "Listing of the stack's bucket (transform jobs list S3Prefix "
            "inputs).",
            "AwsSolutions-IAM5[Action::s3:Abort*]": "Multipart uploads of large outputs to output/, errors/, capture/.",
        }
        bucket_ref = logical_id(bucket)
        for prefix in (
            PREFIXES.models,
            PREFIXES.input,
            PREFIXES.manifests,
            PREFIXES.output,
            PREFIXES.errors,
            PREFIXES.capture,
        ):
            findings[f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{prefix}*]"] = (
                f"Object access limited to the {prefix} prefix of the stack's bucket."
            )
        findings.update(INLINE_POLICY_REASON)
        if vpc_arn is not None:
            # SageMaker attaches the containers to the VPC through network interfaces it creates at run time; the
            # writes are limited to this VPC, the reads (Describe*) support no resource-level permissions.
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",
                    actions=[
                        "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                        "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission",
                    ],
                    resources=["*"],
                    conditions={"ArnEquals": {"ec2:Vpc": vpc_arn}},
                )
            )  # fmt: skip
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="VpcDescribe",
                    actions=[
                        "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                        "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
                    ],
                    resources=["*"],
                )
            )  # fmt: skip
        acknowledge(self.role, findings)
