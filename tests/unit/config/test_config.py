"""Configuration parsing and validation: every key, every error message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from stacks.config import ConfigError, Settings, has_nvme_storage, is_gpu

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]


def test_cdk_json_defaults_equal_the_settings_defaults():
    # Given the context of cdk.json / When parsed / Then it is the documented default configuration
    assert Settings.from_context(CONTEXT) == Settings()


def test_cdk_json_has_every_key_and_the_readme_documents_it():
    readme = (ROOT / "README.md").read_text()
    for key in (field.name for field in dataclasses.fields(Settings)):
        assert key in CONTEXT, f"{key} missing from cdk.json"
        assert f"`{key}`" in readme, f"{key} missing from the README's configuration table"


def test_defaults_are_secure_and_pinned():
    s = Settings()
    assert s.model_id == "facebook/bart-large-mnli"
    assert s.model_revision == "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"
    assert s.endpoint_mode == "serverless" and s.vpc is False and s.retain_data is True and s.alarm_email is None


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("batch_instance_count", "3", 3),
        ("batch_instance_count", 3, 3),
        ("retain_data", "true", True),
        ("vpc", "False", False),
        ("retain_data", False, False),
        ("alarm_email", "ops@example.com", "ops@example.com"),
        ("alarm_email", "", None),
        ("endpoint_5xx_alarm_percent", "2.5", 2.5),
        ("region", "eu-west-1", "eu-west-1"),
        ("endpoint_mode", "none", "none"),
    ],
)
def test_command_line_strings_and_json_values_are_both_accepted(key, raw, expected):
    # `cdk deploy -c key=value` passes strings; cdk.json passes JSON types.
    assert getattr(Settings.from_context({key: raw}), key) == expected


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"endpoint_instance_type": "m5.xlarge"},
            "'endpoint_instance_type': 'm5.xlarge'. Expected a SageMaker instance type starting with 'ml.', e.g. -c endpoint_instance_type=ml.m5.xlarge",  # noqa: E501
        ),
        ({"batch_instance_type": "ml.m5"}, "'batch_instance_type': 'ml.m5'"),
        (
            {"batch_instance_count": 0},
            "'batch_instance_count': 0. Expected an integer from 1 to 100, e.g. -c batch_instance_count=2",
        ),
        ({"batch_instance_count": "two"}, "'batch_instance_count': 'two'"),
        ({"batch_instance_count": True}, "'batch_instance_count': True"),
        ({"batch_window_seconds": 301}, "'batch_window_seconds': 301. Expected an integer from 0 to 300"),
        ({"model_revision": "main"}, "'model_revision': 'main'. Expected a 40-hex-digit commit"),
        ({"model_revision": "D7645E127EAF1AEFC7862FD59A17A5AA8558B8CE"}, "'model_revision'"),
        ({"model_id": "not a model"}, "'model_id': 'not a model'. Expected a Hugging Face model id"),
        (
            {"endpoint_mode": "realtime"},
            "'endpoint_mode': 'realtime'. Expected one of serverless | provisioned | none, e.g. -c endpoint_mode=serverless",  # noqa: E501
        ),
        ({"model_source": "git"}, "'model_source': 'git'. Expected one of staged | hub | s3"),
        ({"vpc": "yes"}, "'vpc': 'yes'. Expected true or false, e.g. -c vpc=true"),
        ({"retain_data": 1}, "'retain_data': 1. Expected true or false"),
        ({"alarm_email": "ops"}, "'alarm_email': 'ops'. Expected an e-mail address"),
        ({"serverless_memory_mb": 512}, "'serverless_memory_mb': 512"),
        ({"serverless_memory_mb": 3000}, "'serverless_memory_mb': 3000. Expected 1024, 2048, 3072, 4096, 5120 or 6144"),
        ({"serverless_max_concurrency": 0}, "'serverless_max_concurrency': 0"),
        ({"log_retention_days": 100}, "'log_retention_days': 100. Expected a CloudWatch Logs retention period"),
        ({"batch_model_timeout_seconds": 3601}, "'batch_model_timeout_seconds': 3601"),
        ({"batch_model_retries": 4}, "'batch_model_retries': 4"),
        ({"batch_max_payload_mb": 101}, "'batch_max_payload_mb': 101"),
        ({"region": "Europe"}, "'region': 'Europe'"),
        ({"stack_name": "my stack"}, "'stack_name': 'my stack'"),
        ({"model_data_url": "https://example.com/model.tar.gz", "model_source": "s3"}, "'model_data_url'"),
        ({"endpoint_5xx_alarm_percent": "lots"}, "'endpoint_5xx_alarm_percent': 'lots'"),
    ],
)
def test_invalid_values_fail_with_key_value_and_example(context, message):
    with pytest.raises(ConfigError) as error:
        Settings.from_context(context)
    assert message in str(error.value)
    assert "e.g. -c " in str(error.value)


@pytest.mark.parametrize(
    ("key", "bad"),
    [("batch_window_seconds", 301), ("inference_batch_size", 0), ("endpoint_5xx_alarm_percent", 0)],
)
def test_the_example_of_a_numeric_key_is_its_default_as_settings_declares_it(key, bad, monkeypatch):
    # Given a different default in Settings (the one declaration) / When a bad value is given / Then it is quoted
    default = getattr(Settings(), key)
    field = next(f for f in dataclasses.fields(Settings) if f.name == key)
    monkeypatch.setattr(field, "default", default * 3)

    with pytest.raises(ConfigError) as error:
        Settings.from_context({key: bad})

    assert str(error.value).endswith(f"e.g. -c {key}={default * 3:g}")


def test_vpc_with_serverless_endpoint_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"serverless endpoints cannot run in a VPC.*-c endpoint_mode=provisioned"):
        Settings.from_context({"vpc": "true"})


def test_vpc_with_provisioned_or_no_endpoint_is_accepted():
    assert Settings.from_context({"vpc": True, "endpoint_mode": "provisioned"}).vpc
    assert Settings.from_context({"vpc": True, "endpoint_mode": "none"}).vpc


def test_hub_model_in_a_vpc_is_refused_because_there_is_no_egress():
    with pytest.raises(ConfigError, match=r"'model_source': 'hub' with vpc=true.*-c model_source=staged"):
        Settings.from_context({"vpc": True, "endpoint_mode": "provisioned", "model_source": "hub"})


def test_s3_model_source_needs_a_model_data_url():
    with pytest.raises(ConfigError, match=r"Missing value for 'model_data_url'.*e.g. -c model_data_url=s3://"):
        Settings.from_context({"model_source": "s3"})
    url = "s3://my-bucket/models/model.tar.gz"
    assert Settings.from_context({"model_source": "s3", "model_data_url": url}).model_data_url == url


def test_model_data_url_without_s3_source_is_refused():
    with pytest.raises(ConfigError, match="only used with model_source='s3'"):
        Settings.from_context({"model_data_url": "s3://my-bucket/models/model.tar.gz"})


def test_min_instances_above_max_is_refused():
    with pytest.raises(ConfigError, match="'endpoint_min_instances': 3 is greater than endpoint_max_instances=2"):
        Settings.from_context({"endpoint_min_instances": 3, "endpoint_max_instances": 2})


@pytest.mark.parametrize(
    ("instance_type", "nvme", "gpu"),
    [
        ("ml.m5.xlarge", False, False),
        ("ml.c5.2xlarge", False, False),
        ("ml.g4dn.xlarge", True, True),
        ("ml.g5.2xlarge", True, True),
        ("ml.p3dn.24xlarge", True, True),
        ("ml.p3.2xlarge", False, True),
        ("ml.m5d.large", True, False),
    ],
)
def test_instance_families(instance_type, nvme, gpu):
    assert has_nvme_storage(instance_type) is nvme
    assert is_gpu(instance_type) is gpu


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ml.g4dn.xlarge,ml.m5.xlarge", ("ml.g4dn.xlarge", "ml.m5.xlarge")),
        (" ml.g5.xlarge , ml.c5.2xlarge ", ("ml.g5.xlarge", "ml.c5.2xlarge")),
        (["ml.g4dn.xlarge", "ml.m5.xlarge"], ("ml.g4dn.xlarge", "ml.m5.xlarge")),
        ("", ("ml.m5.xlarge",)),
    ],
)
def test_batch_instance_types_are_an_ordered_list_from_the_command_line_or_cdk_json(raw, expected):
    settings = Settings.from_context({"batch_instance_types": raw})
    assert settings.batch_instance_types == expected
    assert settings.batch_instance_type == expected[0]


def test_the_old_single_batch_instance_type_key_still_works():
    assert Settings.from_context({**CONTEXT, "batch_instance_type": "ml.g5.xlarge"}).batch_instance_types == (
        "ml.g5.xlarge",
    )


def test_both_instance_type_keys_at_once_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"Both 'batch_instance_type'.*'batch_instance_types'.*Keep only the list"):
        Settings.from_context({"batch_instance_type": "ml.g5.xlarge", "batch_instance_types": "ml.m5.xlarge"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ml.m5.xlarge,ml.m5", "'ml.m5' is not one"),
        ("ml.m5.xlarge,ml.m5.xlarge", "each listed once"),
        ("ml.inf2.xlarge", "AWS Neuron"),
        ("ml.g4dn.xlarge,ml.g5.xlarge,ml.g6.xlarge,ml.m5.xlarge,ml.c5.xlarge", "1 to 4"),
        (7, "1 to 4"),
    ],
)
def test_bad_batch_instance_type_lists_fail_with_the_reason_and_an_example(raw, message):
    with pytest.raises(ConfigError, match="'batch_instance_types'") as error:
        Settings.from_context({"batch_instance_types": raw})
    assert message in str(error.value)
    assert "e.g. -c batch_instance_types=ml.g4dn.xlarge,ml.m5.xlarge" in str(error.value)


def test_a_region_without_the_hugging_face_image_is_refused_with_the_supported_regions():
    from stacks.images import image_uri

    with pytest.raises(ConfigError, match=r"'region': 'xx-fake-1'.*Use one of .*eu-west-1.*e.g. -c region=eu-west-1"):
        image_uri("xx-fake-1", "cpu")


def test_a_misspelled_key_fails_naming_the_closest_real_key():
    # Given a typo of endpoint_mode, which would otherwise deploy the serverless default without a word
    with pytest.raises(ConfigError, match=r"Unknown context key 'endpoint_mod'.*Did you mean 'endpoint_mode'"):
        Settings.from_context({"endpoint_mod": "provisioned"})


def test_an_unknown_key_with_no_close_match_points_to_the_configuration_table():
    with pytest.raises(ConfigError, match=r"Unknown context key 'colour'.*configuration table"):
        Settings.from_context({"colour": "blue"})


def test_cdk_feature_flags_cli_settings_and_cached_lookups_are_not_ours_to_check():
    context = {
        "@aws-cdk/aws-s3:createDefaultLoggingPolicy": True,
        "aws:cdk:enable-path-metadata": True,
        "aws-cdk:enableDiffNoFail": True,
        "cdk-default-synthesizer": "x",
        "availability-zones:account=123456789012:region=eu-west-1": ["eu-west-1a"],
    }
    assert Settings.from_context(context) == Settings()


def test_the_app_rejects_a_misspelled_key_at_synth(tmp_path):
    from stacks.application import build_app

    with pytest.raises(ConfigError, match="endpoint_mode"):
        build_app({**CONTEXT, "endpoint_mod": "provisioned"}, outdir=str(tmp_path))


def test_hypothesis_template_defaults_to_the_handlers_default():
    from stacks.serving_env import DEFAULT_HYPOTHESIS_TEMPLATE

    assert Settings().hypothesis_template == DEFAULT_HYPOTHESIS_TEMPLATE == CONTEXT["hypothesis_template"]


def test_a_japanese_hypothesis_template_is_accepted_from_the_command_line():
    settings = Settings.from_context({"hypothesis_template": "この文章は{}に関するものです。"})
    assert settings.hypothesis_template == "この文章は{}に関するものです。"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("This example is about the label.", "has no {}"),
        ("{} or {}", "cannot be formatted"),
        ("{label} is the topic", "cannot be formatted"),
        ("{:>10000000}", "cannot be formatted"),
        ("a } b {}", "cannot be formatted"),
        ("{}" + "x" * 1100, "characters long"),
        (5, "is a int"),
    ],
)
def test_a_hypothesis_template_without_exactly_one_placeholder_fails_synth_with_the_fix(raw, reason):
    with pytest.raises(ConfigError) as error:
        Settings.from_context({"hypothesis_template": raw})
    message = str(error.value)
    assert message.startswith("Invalid value for 'hypothesis_template': ")
    assert reason in message
    assert '-c hypothesis_template="This example is {}."' in message
