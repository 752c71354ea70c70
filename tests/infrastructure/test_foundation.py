"""The foundation: key, buckets, execution role, image resolution, model, endpoint modes, VPC."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from stacks.images import image_uri, supported_regions

GPU = {
    "endpoint_mode": "provisioned",
    "endpoint_instance_type": "ml.g5.xlarge",
    "batch_instance_type": "ml.g4dn.xlarge",
}
PROVISIONED = {"endpoint_mode": "provisioned", "data_capture": True}
VPC = {"endpoint_mode": "provisioned", "vpc": True}


def statements(synthesized: Any) -> list[dict[str, Any]]:
    found = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def all_models(synthesized: Any) -> list[dict[str, Any]]:
    """The SageMaker models of both stacks: the batch models and the endpoint's own."""
    stacks = [synthesized, *([synthesized.endpoint] if synthesized.endpoint else [])]
    return [m for st in stacks for m in st.resources("AWS::SageMaker::Model").values()]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- KMS ------------------------------------------------------------------------------------------------------------


def test_one_customer_managed_key_with_rotation(synth):
    # Given the default configuration / When synthesized
    s = synth()
    # Then exactly one customer-managed key with yearly rotation exists
    s.template.resource_count_is("AWS::KMS::Key", 1)
    s.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_key_policy_lets_cloudwatch_logs_use_the_key_for_this_accounts_log_groups(synth):
    policy = synth().only("AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    logs = [st for st in policy if st.get("Sid") == "AllowCloudWatchLogs"]
    assert len(logs) == 1
    assert "kms:EncryptionContext:aws:logs:arn" in json.dumps(logs[0]["Condition"])


def test_key_and_bucket_are_retained_by_default_and_deleted_when_retain_data_is_false(synth):
    retained, deleted = synth(), synth(retain_data=False)
    for kind in ("AWS::KMS::Key", "AWS::S3::Bucket"):
        assert {r["DeletionPolicy"] for r in retained.resources(kind).values()} == {"Retain"}
        assert {r["DeletionPolicy"] for r in deleted.resources(kind).values()} == {"Delete"}


# --- Buckets --------------------------------------------------------------------------------------------------------


def data_bucket(s: Any) -> dict[str, Any]:
    buckets = [b for b in s.resources("AWS::S3::Bucket").values() if "LoggingConfiguration" in b["Properties"]]
    assert len(buckets) == 1
    return buckets[0]["Properties"]


def test_data_bucket_uses_sse_kms_with_the_stack_key_and_bucket_key(synth):
    props = data_bucket(synth())
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["BucketKeyEnabled"] is True
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert "Fn::GetAtt" in rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]


def test_data_bucket_blocks_public_access_versions_objects_and_logs_access(synth):
    props = data_bucket(synth())
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "data-bucket/"


def test_every_bucket_denies_requests_without_tls(synth):
    s = synth()
    policies = s.resources("AWS::S3::BucketPolicy")
    assert len(policies) == len(s.resources("AWS::S3::Bucket"))
    for policy in policies.values():
        denies = [
            st
            for st in policy["Properties"]["PolicyDocument"]["Statement"]
            if st["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(st.get("Condition", {}))
        ]
        assert denies, "bucket policy without a TLS-only statement"


def test_lifecycle_aborts_incomplete_uploads_and_expires_outputs_only_when_configured(synth):
    default_rules = data_bucket(synth())["LifecycleConfiguration"]["Rules"]
    assert any(r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 7} for r in default_rules)
    # only the batch path's scratch folders expire by default (tests/infrastructure/test_scratch_folders.py): no
    # rule reaches an input, a canonical output or a status record
    kept = (
        "input/a/b.jsonl",
        "output/a/b.jsonl.out",
        "output/a/b.jsonl.status.json",
        "errors/a/b.jsonl.status.json",
        "manifests/j.json",
        "manifests/j.versions.json",
    )
    scratch = [r.get("Prefix", "") for r in default_rules if "ExpirationInDays" in r]
    assert scratch and not any(key.startswith(prefix) for key in kept for prefix in scratch)

    expiring = data_bucket(synth(output_expiry_days=30))["LifecycleConfiguration"]["Rules"]
    expiring_prefixes = {r["Prefix"] for r in expiring if r.get("ExpirationInDays") == 30}
    assert expiring_prefixes == {"output/", "errors/"}


# --- IAM ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{}, PROVISIONED, VPC, GPU], ids=["default", "provisioned", "vpc", "gpu"])
def test_no_full_access_managed_policy_and_no_action_star(synth, config):
    s = synth(**config)
    assert "FullAccess" not in json.dumps(s.raw)
    for statement in statements(s):
        assert "*" not in as_list(statement["Action"]), statement


def test_execution_role_trusts_only_sagemaker_of_this_account(synth):
    s = synth()
    roles = [
        r
        for r in s.resources("AWS::IAM::Role").values()
        if "sagemaker.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert len(roles) == 1
    trust = roles[0]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in roles[0]["Properties"]


def execution_role_statements(s: Any) -> list[dict[str, Any]]:
    policies = [
        p
        for p in s.resources("AWS::IAM::Policy").values()
        if any("ExecutionRole" in ref.get("Ref", "") for ref in p["Properties"]["Roles"])
    ]
    assert len(policies) == 1
    return policies[0]["Properties"]["PolicyDocument"]["Statement"]


def test_execution_role_reads_and_writes_only_its_prefixes(synth):
    text = json.dumps(execution_role_statements(synth()))
    for prefix in ("models/*", "input/*", "manifests/*", "output/*", "errors/*", "capture/*"):
        assert f'"/{prefix}"' in text
    assert '"arn:aws:s3:::*"' not in text


def test_execution_role_wildcard_resources_are_only_the_ones_with_a_reason(synth):
    # ecr:GetAuthorizationToken, PutMetricData (namespace-conditioned) and, with a VPC, the ENI statements.
    for config, allowed in (
        ({}, {"EcrLogin", "ContainerMetrics"}),
        (VPC, {"EcrLogin", "ContainerMetrics", "VpcNetworkInterfaces", "VpcDescribe"}),
    ):
        wildcard = {st.get("Sid") for st in execution_role_statements(synth(**config)) if st["Resource"] == "*"}
        assert wildcard == allowed


def test_container_metrics_are_limited_to_sagemaker_namespaces(synth):
    metrics = next(st for st in execution_role_statements(synth()) if st.get("Sid") == "ContainerMetrics")
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}


def test_vpc_network_interface_writes_are_limited_to_the_stacks_vpc(synth):
    eni = next(st for st in execution_role_statements(synth(**VPC)) if st.get("Sid") == "VpcNetworkInterfaces")
    assert "ec2:Vpc" in json.dumps(eni["Condition"])


def test_image_pull_is_limited_to_the_hugging_face_repository(synth):
    pull = next(st for st in execution_role_statements(synth()) if st.get("Sid") == "PullInferenceImage")
    assert "repository/huggingface-pytorch-inference" in json.dumps(pull["Resource"])


# --- Image and model ------------------------------------------------------------------------------------------------


def test_image_mapping_matches_the_sagemaker_sdk_for_every_region(synth):
    mapping = next(iter(synth().raw["Mappings"].values()))
    assert set(mapping) == set(supported_regions())
    assert mapping["eu-west-1"]["cpu"] == image_uri("eu-west-1", "cpu")
    assert mapping["us-east-1"]["gpu"] == image_uri("us-east-1", "gpu")
    assert mapping["cn-north-1"]["cpu"].startswith("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/")
    assert "4.51.3" in mapping["eu-west-1"]["cpu"] and "-cpu-" in mapping["eu-west-1"]["cpu"]


def test_model_image_is_picked_for_the_deployment_region_and_processor(synth):
    cpu = synth()
    for model in all_models(cpu):
        image = model["Properties"]["PrimaryContainer"]["Image"]
        assert image["Fn::FindInMap"][1] == {"Ref": "AWS::Region"} and image["Fn::FindInMap"][2] == "cpu"
    gpu_images = {
        json.dumps(m["Properties"]["PrimaryContainer"]["Image"]["Fn::FindInMap"][2]) for m in all_models(synth(**GPU))
    }
    assert gpu_images == {'"gpu"'}


def test_a_region_bound_stack_gets_that_regions_image(synth):
    s = synth(region="eu-west-1")
    images = {m["Properties"]["PrimaryContainer"]["Image"] for m in all_models(s)}
    assert images == {image_uri("eu-west-1", "cpu")}


def test_hub_model_pins_model_id_and_revision(synth):
    s = synth(model_source="hub")
    for model in all_models(s):
        env = model["Properties"]["PrimaryContainer"]["Environment"]
        assert env["HF_MODEL_ID"] == "facebook/bart-large-mnli"
        assert env["HF_MODEL_REVISION"] == "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"
        assert env["HF_TASK"] == "zero-shot-classification"


def test_model_endpoint_config_and_endpoint_depend_on_each_other_explicitly(synth):
    s = synth(**PROVISIONED).endpoint
    (config_id,) = s.resources("AWS::SageMaker::EndpointConfig")
    endpoint = s.only("AWS::SageMaker::Endpoint")
    assert config_id in endpoint["DependsOn"]
    config = s.only("AWS::SageMaker::EndpointConfig")
    assert any(dep in s.resources("AWS::SageMaker::Model") for dep in config["DependsOn"])


# --- Endpoint modes -------------------------------------------------------------------------------------------------


def test_serverless_endpoint_uses_configured_memory_and_concurrency_and_the_key(synth):
    s = synth(serverless_memory_mb=4096, serverless_max_concurrency=3).endpoint
    s.template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "KmsKeyId": Match.any_value(),
            "ProductionVariants": [
                Match.object_like({"ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 3}})
            ],
        },
    )
    s.template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)


def test_provisioned_endpoint_scales_on_invocations_per_instance(synth):
    s = synth(**PROVISIONED, endpoint_min_instances=2, endpoint_max_instances=4).endpoint
    s.template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "KmsKeyId": Match.any_value(),
            "ProductionVariants": [Match.object_like({"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 2})],
        },
    )
    s.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 2, "MaxCapacity": 4, "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"},
    )
    s.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                {
                    "TargetValue": 120,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                }
            )
        },
    )


def test_data_capture_goes_to_the_capture_prefix_under_the_stack_key(synth):
    s = synth(**PROVISIONED)
    capture = s.endpoint.only("AWS::SageMaker::EndpointConfig")["Properties"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True
    assert "/capture" in json.dumps(capture["DestinationS3Uri"])
    # the key is the main stack's, read from its outputs
    key_arn = s.raw["Outputs"][capture["KmsKeyId"]["Fn::GetStackOutput"]["OutputName"]]["Value"]
    (key_id,) = s.resources("AWS::KMS::Key")
    assert key_arn == {"Fn::GetAtt": [key_id, "Arn"]}


def test_endpoint_mode_none_creates_no_endpoint(synth):
    s = synth(endpoint_mode="none")
    assert s.endpoint is None  # no endpoint stack
    s.template.resource_count_is("AWS::SageMaker::Endpoint", 0)
    s.template.resource_count_is("AWS::SageMaker::EndpointConfig", 0)
    assert "EndpointName" not in s.raw["Outputs"]
    assert s.resources("AWS::SageMaker::Model")


def test_gpu_endpoint_with_nvme_storage_has_no_volume_key(synth):
    # ml.g5 has local NVMe storage: SageMaker rejects a volume KMS key there.
    config = synth(**GPU).endpoint.only("AWS::SageMaker::EndpointConfig")["Properties"]
    assert "KmsKeyId" not in config
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"


# --- VPC ------------------------------------------------------------------------------------------------------------


def test_vpc_has_isolated_subnets_in_two_azs_no_nat_and_flow_logs(synth):
    s = synth(**VPC)
    s.template.resource_count_is("AWS::EC2::VPC", 1)
    s.template.resource_count_is("AWS::EC2::Subnet", 2)
    s.template.resource_count_is("AWS::EC2::NatGateway", 0)
    s.template.resource_count_is("AWS::EC2::InternetGateway", 0)
    s.template.resource_count_is("AWS::EC2::FlowLog", 1)
    for subnet in s.resources("AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_vpc_has_gateway_and_interface_endpoints_for_the_services_used(synth):
    endpoints = synth(**VPC).resources("AWS::EC2::VPCEndpoint").values()
    names = json.dumps([e["Properties"]["ServiceName"] for e in endpoints])
    for service in ("s3", "dynamodb", "sagemaker.api", "sagemaker.runtime", "ecr.dkr", "ecr.api", "logs", "kms", "sts"):
        assert f".{service}" in names, service


def test_security_groups_have_no_open_ingress(synth):
    s = synth(**VPC)
    for group in s.resources("AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0"
    for rule in s.resources("AWS::EC2::SecurityGroupIngress").values():
        assert "SourceSecurityGroupId" in rule["Properties"]


def test_models_run_in_the_vpc_when_enabled(synth):
    for model in all_models(synth(**VPC)):
        vpc_config = model["Properties"]["VpcConfig"]
        assert len(vpc_config["Subnets"]) == 2 and len(vpc_config["SecurityGroupIds"]) == 1


# --- Outputs --------------------------------------------------------------------------------------------------------


def test_outputs_tell_users_and_the_cli_where_things_are(synth):
    outputs = synth().raw["Outputs"]
    for name in ("BucketName", "InputPrefix", "OutputPrefix", "ErrorsPrefix", "ModelName", "EndpointName"):
        assert name in outputs
    assert outputs["InputPrefix"]["Value"] == "input/"


def test_own_model_artifact_is_readable_by_the_execution_role_and_nothing_else_of_its_bucket(synth):
    s = synth(model_source="s3", model_data_url="s3://my-models/nli/v3/model.tar.gz")
    external = [st for st in execution_role_statements(s) if st.get("Sid") == "ReadExternalModel"]
    assert len(external) == 1
    assert external[0]["Action"] == "s3:GetObject"
    assert external[0]["Resource"] == {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::my-models/nli/v3/model.tar.gz"]]
    }


def test_batch_functions_run_in_the_vpc_when_enabled_and_can_attach_to_it(synth):
    s = synth(**VPC)
    functions = {k: v for k, v in s.resources("AWS::Lambda::Function").items() if k.startswith("Batch")}
    assert len(functions) == 2
    for function in functions.values():
        config = function["Properties"]["VpcConfig"]
        assert len(config["SubnetIds"]) == 2 and len(config["SecurityGroupIds"]) == 1
    eni = [st for st in statements(s) if st.get("Sid") == "VpcNetworkInterfaces"]
    assert len(eni) == 3  # the execution role and the two batch functions' roles
    # Without a VPC, no function is placed in one.
    assert all("VpcConfig" not in f["Properties"] for f in synth().resources("AWS::Lambda::Function").values())
