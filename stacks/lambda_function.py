"""One builder for the stack's batch functions: what every one of them gets, declared once.

:class:`FunctionBuilder` makes the role (it may write its own log group only; in a VPC, the network-interface actions
Lambda needs), the KMS-encrypted log group, the function (Python 3.13 on x86_64, the Powertools and contract layers,
JSON logs, KMS-encrypted environment, the stack's isolated subnets when there is a VPC) and the cdk-nag / checkov
acknowledgments every such function needs. The unit that asks for a function adds its own permissions and findings.

Plain classes, not constructs: the resources are created in the scope the builder is given (``Batch``), so their
logical ids stay those of the flat pipeline they came from (``BatchTrigger…``, ``BatchTriggerRole…``,
``BatchTriggerLogs…``); a construct level would insert its id into every logical id and replace the resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.checks import INLINE_POLICY_REASON, acknowledge, checkov_skip
from stacks.code_assets import LAMBDA_RUNTIME, contract_layer, function_code, function_handler
from stacks.network import Network

POWERTOOLS_LAYER_PARAMETER: Final = "/aws/service/powertools/python/x86_64/python3.13/3.22.1"
MEMORY_MB: Final = 512

OUTSIDE_VPC: Final = (
    "vpc=false (the default): the function only calls AWS APIs (S3, DynamoDB, SageMaker, SQS, SNS) over TLS with "
    "IAM. With vpc=true it runs in the stack's isolated subnets and reaches those APIs through VPC endpoints."
)
VPC_ENI: Final = (
    "With vpc=true: the EC2 network-interface actions Lambda needs to attach the function to the VPC support no "
    "resource-level permissions."
)
NO_RESERVED_CONCURRENCY: Final = (
    "Concurrency is bounded by the SQS event source's maximum concurrency (trigger) or by EventBridge's event rate "
    "(one event per finished job); reserving account concurrency would fail on accounts with the default quota."
)
PYTHON_313: Final = (
    "Python 3.13 is the project's Lambda runtime (one runtime for all functions, matched to the Powertools layer "
    "3.22.1); moving to a newer one is a project-wide change."
)
VPC_ENI_ACTIONS: Final = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
_WILDCARD_RESOURCE: Final = "AwsSolutions-IAM5[Resource::*]"


@dataclass(frozen=True)
class FunctionParts:
    """What :meth:`FunctionBuilder.build` creates for one function, and what it was given that monitoring needs."""

    function: lambda_.Function
    role: iam.Role
    log_group: logs.LogGroup
    timeout: Duration
    service: str  # POWERTOOLS_SERVICE_NAME: the one dimension of its Powertools metrics
    metrics_namespace: str  # POWERTOOLS_METRICS_NAMESPACE


class BatchFunction:
    """Base of the batch path's function units (``parts`` from :meth:`FunctionBuilder.build`): the metrics the
    dashboard and the alarms chart, and :meth:`allow` for the unit's own permissions."""

    def __init__(self, parts: FunctionParts) -> None:
        self.function = parts.function
        self.role = parts.role
        self.log_group = parts.log_group
        self.timeout = parts.timeout
        self.service = parts.service
        self.metrics_namespace = parts.metrics_namespace

    def allow(self, sid: str, actions: Sequence[str], resources: Sequence[str], **conditions: Any) -> None:
        """Add one statement to the function's role (``conditions``: ``{operator: {key: value}}`` by keyword)."""
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid=sid, actions=list(actions), resources=list(resources), conditions=conditions or None
            )
        )

    def metric(self, name: str, *, period: Duration, label: str | None = None) -> cloudwatch.Metric:
        """A metric the function emits with Powertools (its namespace, the one dimension ``service``), summed."""
        return cloudwatch.Metric(
            namespace=self.metrics_namespace,
            metric_name=name,
            dimensions_map={"service": self.service},
            statistic="Sum",
            period=period,
            label=label or name,
        )

    def metric_invocations(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        return self.function.metric_invocations(period=period, statistic="Sum", label=label)

    def metric_errors(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        return self.function.metric_errors(period=period, statistic="Sum", label=label)

    def metric_throttles(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        return self.function.metric_throttles(period=period, statistic="Sum", label=label)

    def metric_duration(self, statistic: str, *, period: Duration, label: str) -> cloudwatch.Metric:
        return self.function.metric_duration(period=period, statistic=statistic, label=label)

    @property
    def timeout_ms(self) -> float:
        return self.timeout.to_milliseconds()


class FunctionBuilder:
    """Builds the batch functions in ``scope``, all alike (see the module docstring); creates the two layers."""

    def __init__(
        self,
        scope: Construct,
        *,
        key: kms.IKey,
        network: Network | None,
        log_retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> None:
        self.scope = scope
        self.key = key
        self.network = network
        self.log_retention = log_retention
        self.removal = removal
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            scope, "Powertools", ssm.StringParameter.value_for_string_parameter(scope, POWERTOOLS_LAYER_PARAMETER)
        )
        # What the trigger and the outcome function must agree on (manifest format, job names, status keys).
        self.layers: list[lambda_.ILayerVersion] = [powertools, contract_layer(scope, "Contract")]

    @property
    def in_vpc(self) -> bool:
        return self.network is not None

    def build(
        self,
        id_: str,
        *,
        package: str,
        description: str,
        role_description: str,
        timeout: Duration,
        environment: Mapping[str, str],
        function_findings: Mapping[str, str],
        role_findings: Mapping[str, str],
        dead_letter_queue: sqs.IQueue | None = None,
    ) -> FunctionParts:
        """The function ``id_`` (role ``<id_>Role``, log group ``<id_>Logs``) running ``functions/<package>``.

        ``function_findings`` / ``role_findings``: the unit's own acknowledgments, added to the common ones (a unit's
        ``Resource::*`` reason is extended with the VPC one when the function runs in a VPC).
        """
        log_group = logs.LogGroup(
            self.scope, f"{id_}Logs", encryption_key=self.key, retention=self.log_retention, removal_policy=self.removal
        )
        role = self._role(f"{id_}Role", role_description, log_group)
        placement: dict[str, Any] = (
            {
                "vpc": self.network.vpc,
                "vpc_subnets": self.network.subnets,
                "security_groups": [self.network.security_group],
            }
            if self.network is not None
            else {}
        )
        function = lambda_.Function(
            self.scope,
            id_,
            role=role,
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.X86_64,  # the Powertools layer parameter is the x86_64 one
            handler=function_handler(package),
            code=function_code(package),
            layers=self.layers,
            memory_size=MEMORY_MB,
            timeout=timeout,
            **placement,
            environment=dict(environment),
            environment_encryption=self.key,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            dead_letter_queue=dead_letter_queue,
        )
        self._acknowledge(function, role, function_findings, role_findings)
        return FunctionParts(
            function,
            role,
            log_group,
            timeout,
            service=environment["POWERTOOLS_SERVICE_NAME"],
            metrics_namespace=environment["POWERTOOLS_METRICS_NAMESPACE"],
        )

    def _role(self, id_: str, description: str, log_group: logs.ILogGroup) -> iam.Role:
        role = iam.Role(
            self.scope, id_, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        if self.in_vpc:
            # Lambda attaches the function to the VPC through network interfaces it manages; these EC2 actions
            # support no resource-level permissions for this use (AWSLambdaVPCAccessExecutionRole uses "*" too).
            role.add_to_policy(
                iam.PolicyStatement(sid="VpcNetworkInterfaces", actions=list(VPC_ENI_ACTIONS), resources=["*"])
            )
            checkov_skip(role.node.find_child("DefaultPolicy"), "CKV_AWS_111", VPC_ENI)
        return role

    def _acknowledge(
        self,
        function: lambda_.Function,
        role: iam.Role,
        function_findings: Mapping[str, str],
        role_findings: Mapping[str, str],
    ) -> None:
        outside_vpc = (
            {}
            if self.in_vpc
            else {"HIPAA.Security-LambdaInsideVPC": OUTSIDE_VPC, "NIST.800.53.R5-LambdaInsideVPC": OUTSIDE_VPC}
        )
        acknowledge(
            function,
            {
                "AwsSolutions-L1": PYTHON_313,
                **outside_vpc,
                "HIPAA.Security-LambdaConcurrency": NO_RESERVED_CONCURRENCY,
                "NIST.800.53.R5-LambdaConcurrency": NO_RESERVED_CONCURRENCY,
                **function_findings,
            },
        )
        findings = {**INLINE_POLICY_REASON, **role_findings}
        if self.in_vpc:
            own = findings.get(_WILDCARD_RESOURCE)
            findings[_WILDCARD_RESOURCE] = f"{own} {VPC_ENI}" if own else VPC_ENI
        acknowledge(role, findings)
        checkov_skip(function, "CKV_AWS_117", OUTSIDE_VPC)
        checkov_skip(function, "CKV_AWS_115", NO_RESERVED_CONCURRENCY)
