"""The stack's customer-managed KMS key."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class EncryptionKey(Construct):
    """One customer-managed key with yearly rotation, used by every service of the stack that accepts one.

    The key policy keeps the account's default administration statement and names each AWS service principal that
    must use the key on the stack's behalf (CloudWatch Logs here; others through :meth:`allow_service`), always
    bound to this account with ``aws:SourceAccount`` or an encryption-context condition.
    With ``retain`` the key survives stack deletion (data encrypted with it stays readable); otherwise it is
    scheduled for deletion after the 7-day waiting period.
    """

    def __init__(self, scope: Construct, id_: str, *, retain: bool) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the data, queues, topics, logs and SageMaker volumes of {stack.stack_name}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
            pending_window=Duration.days(7) if not retain else None,
        )
        # CloudWatch Logs encrypts the stack's log groups; the condition limits it to this account's log groups.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogs",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": f"arn:{stack.partition}:logs:{stack.region}:"
                        f"{stack.account}:log-group:*"
                    }
                },
            )
        )

    def allow_service(self, sid: str, service: str, *, actions: list[str] | None = None) -> None:
        """Let an AWS service principal (e.g. ``s3.amazonaws.com``) use the key for resources of this account."""
        stack = Stack.of(self)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                principals=[iam.ServicePrincipal(service)],
                actions=actions or ["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
