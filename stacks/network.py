"""The optional VPC (``vpc=true``): isolated subnets, no NAT, VPC endpoints for the AWS APIs called from inside it."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.checks import INLINE_POLICY_REASON, acknowledge

# Interface endpoints for what the SageMaker containers and the batch functions call from the isolated subnets (no
# internet egress exists): SageMaker API (the trigger's transform jobs) and runtime (callers of the endpoint inside
# the VPC), STS (credentials), CloudWatch Logs and metrics, ECR API and registry (image pulls), KMS (the stack key),
# SQS (the trigger's queue) and SNS (the outcome function's notices). S3 and DynamoDB are gateway endpoints (below).
# None for EventBridge (its rule invokes the outcome function; nothing in the VPC calls its API) nor Secrets Manager
# (only the model importer reads the token, and it runs outside the VPC).
INTERFACE_SERVICES = {
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
}


class Network(Construct):
    """Two-AZ VPC with only isolated subnets (no NAT, no internet gateway), flow logs to a KMS-encrypted log group.

    ``security_group`` is for the SageMaker model containers and the stack's functions: no ingress at all, egress
    only HTTPS (the isolated subnets reach nothing but the VPC endpoints).
    """

    def __init__(
        self, scope: Construct, id_: str, *, key: kms.IKey, log_retention: logs.RetentionDays, retain: bool
    ) -> None:
        super().__init__(scope, id_)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22)
            ],
            restrict_default_security_group=True,
        )
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            encryption_key=key,
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
        )
        flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        acknowledge(flow_log, INLINE_POLICY_REASON)
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.subnets = subnets
        self.subnet_ids = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)

        self.security_group = ec2.SecurityGroup(
            self,
            "Workloads",
            vpc=self.vpc,
            description="SageMaker containers and functions - no ingress, HTTPS egress to VPC endpoints only",
            allow_all_outbound=False,
        )
        # Gateway endpoints (S3, DynamoDB) are reached through public service IP ranges, so egress is HTTPS to any
        # address; the subnets have no route to the internet, so only the VPC endpoints are reachable.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to the VPC endpoints")

        endpoint_group = ec2.SecurityGroup(
            self,
            "Endpoints",
            vpc=self.vpc,
            description="Interface VPC endpoints - HTTPS from the workloads security group only",
            allow_all_outbound=False,
        )
        endpoint_group.add_ingress_rule(self.security_group, ec2.Port.tcp(443), "HTTPS from the workloads")
        for name, service in INTERFACE_SERVICES.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=subnets,
                security_groups=[endpoint_group],
                private_dns_enabled=True,
                open=False,  # ingress only from the workloads' group (above), not the whole VPC CIDR
            )
