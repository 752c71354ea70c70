"""Compliance checks that run on every synthesis: cdk-nag's AwsSolutions, HIPAA Security and NIST 800-53 R5 packs.

An unacknowledged finding makes ``app.synth()`` fail (``ValidationFailed``) and writes ``validation-report.json``.
Acknowledgments are made per resource, with the concrete reason, through :func:`acknowledge`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aws_cdk as cdk
import jsii
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks
from constructs import IConstruct


def add_compliance_checks(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True),
        HIPAASecurityChecks(app, verbose=True),
        NIST80053R5Checks(app, verbose=True),
    )


# Every role's policy is generated from the grants in this app: it is created, versioned and rolled back with the
# stack and attached to that one role, so a separately managed policy would add nothing but indirection.
INLINE_POLICY_REASON: Final = {
    f"{pack}-IAMNoInlinePolicy": "The policy is generated from this stack's grants for this one role and is "
    "versioned and rolled back with the stack; a reusable managed policy would add nothing."
    for pack in ("HIPAA.Security", "NIST.800.53.R5")
}


def logical_id(construct: IConstruct) -> str:
    """The CloudFormation logical id of a construct's resource, as cdk-nag prints it in finding ids."""
    stack = cdk.Stack.of(construct)
    child = construct.node.default_child
    assert isinstance(child, cdk.CfnElement)
    return str(stack.resolve(stack.get_logical_id(child)))


def nag_arn(scope: IConstruct, service: str, rest: str) -> str:
    """An ARN as cdk-nag prints it in finding ids: unresolved pseudo parameters as ``<AWS::Region>``, bound values
    (a region-bound stack) as themselves."""
    stack = cdk.Stack.of(scope)

    def show(value: str, pseudo: str) -> str:
        return f"<{pseudo}>" if cdk.Token.is_unresolved(value) else value

    region, account = show(stack.region, "AWS::Region"), show(stack.account, "AWS::AccountId")
    return f"arn:{show(stack.partition, 'AWS::Partition')}:{service}:{region}:{account}:{rest}"


def acknowledge(construct: IConstruct, findings: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings on one construct (and its children): ``{rule id: reason}``.

    Rule ids that report per finding need the finding too, e.g. ``AwsSolutions-IAM5[Resource::*]``.
    """
    validations = cdk.Validations.of(construct)
    for rule_id, reason in findings.items():
        validations.acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))


def checkov_skip(construct: IConstruct, check_id: str, reason: str) -> None:
    """Skip one checkov check on a construct's CloudFormation resource, with the reason, in its metadata."""
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    assert isinstance(resource, cdk.CfnResource)
    existing = resource.get_metadata("checkov") or {}
    skips = [*existing.get("skip", []), {"id": check_id, "comment": reason}]
    resource.add_metadata("checkov", {"skip": skips})


# Deploy-time handlers that aws-cdk-lib itself adds (bucket notifications, auto-delete of objects, restriction of the
# VPC's default security group). CloudFormation invokes them during deployments only.
_CDK_HANDLER_MARKERS = ("CustomResourceProvider", "BucketNotificationsHandler")
_CDK_HANDLER_REASON = (
    "aws-cdk-lib's own deploy-time handler: invoked synchronously by CloudFormation during deployments only, "
    "so a DLQ, reserved concurrency or VPC placement adds nothing."
)


@jsii.implements(cdk.IAspect)
class _SkipCdkHandlers:
    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type == "AWS::Lambda::Function"
            and any(marker in node.node.path for marker in _CDK_HANDLER_MARKERS)
        ):
            for check in ("CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"):
                checkov_skip(node, check, _CDK_HANDLER_REASON)


def skip_checkov_for_cdk_handlers(scope: IConstruct) -> None:
    """Record checkov skips (with the reason) on the Lambda functions aws-cdk-lib adds for its own custom resources."""
    cdk.Aspects.of(scope).add(_SkipCdkHandlers())
