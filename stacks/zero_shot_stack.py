"""The stack: it only wires the constructs of each logical unit together and publishes the outputs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.batch import BatchPipeline
from stacks.batch_trigger import BatchTarget
from stacks.checks import skip_checkov_for_cdk_handlers
from stacks.config import Settings
from stacks.encryption import EncryptionKey
from stacks.endpoint import endpoint_name
from stacks.execution_role import SageMakerExecutionRole
from stacks.images import InferenceImages, processor
from stacks.model import SageMakerModel
from stacks.model_import import ModelImport
from stacks.monitoring import Monitoring
from stacks.network import Network
from stacks.serving_env import serving_environment
from stacks.storage import PREFIXES, DataStorage

HUB_EXCEPTION = (
    "model_source=hub: the container downloads the model from the Hugging Face Hub when it starts, which needs "
    "internet egress. Use model_source=staged (the default) or s3 for a network-isolated model."
)
SERVERLESS_EXCEPTION = "SageMaker does not run serverless endpoints network-isolated (nor in a VPC)."
# Serverless endpoints run on CPU: their model takes the CPU container and this type's serving environment.
SERVERLESS_MODEL_INSTANCE = "ml.m5.xlarge"


class ZeroShotStack(cdk.Stack):
    """Zero-shot text classification on SageMaker: storage, key, network, batch models and the batch path, monitoring.

    The real-time endpoint is in a stack of its own (:class:`stacks.endpoint_stack.EndpointStack`), so that a failed
    ``CreateEndpoint`` rolls back only that stack; this one publishes and watches the endpoint by its name.
    """

    def __init__(self, scope: Construct, id_: str, *, settings: Settings, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        log_retention: logs.RetentionDays = getattr(logs.RetentionDays, _retention_name(settings.log_retention_days))
        self.log_retention = log_retention

        encryption = EncryptionKey(self, "Encryption", retain=settings.retain_data)
        self.key = encryption.key
        self.encryption = encryption
        storage = DataStorage(
            self,
            "Storage",
            key=self.key,
            retain=settings.retain_data,
            output_expiry_days=settings.output_expiry_days,
        )
        self.bucket = storage.bucket
        self.network = (
            Network(self, "Network", key=self.key, log_retention=log_retention, retain=settings.retain_data)
            if settings.vpc
            else None
        )
        self.images = InferenceImages(self, "Images")
        self.execution_role = SageMakerExecutionRole(
            self,
            "ExecutionRole",
            bucket=self.bucket,
            key=self.key,
            image_repository_arn=self.images.repository_arn,
            vpc_arn=self.network.vpc.vpc_arn if self.network else None,
            external_model_url=settings.model_data_url if settings.model_source == "s3" else None,
        ).role

        # Model import
        model_data_url: str | None = settings.model_data_url if settings.model_source == "s3" else None
        self.model_data_url = model_data_url
        self.model_import: ModelImport | None = None
        if settings.model_source == "staged":
            # The pinned model is copied into models/ of the bucket at deploy and served network-isolated.
            self.model_import = ModelImport(
                self, "ModelImport", settings=settings, bucket=self.bucket, key=self.key, log_retention=log_retention
            )
            model_data_url = self.model_import.model_data_url
            self.model_data_url = model_data_url

        # Batch models: one per container family (GPU / CPU) and serving environment of the configured instance
        # types, so usually one per family. The first type's model keeps the construct ID "Model".
        self._models_by_setup: dict[tuple[str, tuple[tuple[str, str], ...]], SageMakerModel] = {}
        self.batch_models: dict[str, SageMakerModel] = {}
        for instance_type in settings.batch_instance_types:
            setup = self._setup(instance_type, model_data_url)
            if setup not in self._models_by_setup:
                id_ = "Model" if not self._models_by_setup else f"Model{_pascal(instance_type)}"
                self._models_by_setup[setup] = self._model(id_, instance_type, model_data_url, isolated=True)
            self.batch_models[instance_type] = self._models_by_setup[setup]
        self.model = self.batch_models[settings.batch_instance_type]

        # The real-time endpoint has a stack of its own (stacks/endpoint_stack.py); this one knows only its name.
        self.endpoint_name: str | None = endpoint_name(settings) if settings.has_endpoint else None

        # Batch path
        self.batch = BatchPipeline(
            self,
            "Batch",
            settings=settings,
            key=self.key,
            bucket=self.bucket,
            execution_role=self.execution_role,
            targets=[BatchTarget(t, self.batch_models[t]) for t in settings.batch_instance_types],
            network=self.network,
            log_retention=log_retention,
        )
        cdk.CfnOutput(self, "QueueUrl", value=self.batch.inbox.queue.queue_url, description="Batch path queue")
        cdk.CfnOutput(
            self, "DeadLetterQueueUrl", value=self.batch.inbox.dead_letter_queue.queue_url, description="Batch path DLQ"
        )
        cdk.CfnOutput(
            self, "TransformJobPrefix", value=self.batch.job_name_prefix, description="Names of this stack's jobs"
        )

        # Monitoring
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            settings=settings,
            encryption=encryption,
            batch=self.batch,
            endpoint_name=self.endpoint_name,
        )
        cdk.CfnOutput(
            self, "DashboardUrl", value=self.monitoring.dashboard_url, description="CloudWatch dashboard of the stack"
        )
        cdk.CfnOutput(
            self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn, description="SNS topic of the stack's alarms"
        )

        self._outputs()
        skip_checkov_for_cdk_handlers(self)

    def _environment(self, instance_type: str, model_data_url: str | None, *, isolated: bool = True) -> dict[str, str]:
        """The model environment for ``instance_type`` (the handler's settings for its family); offline from the Hub
        when the model is network-isolated (``isolated`` and the weights from S3, as in :meth:`build_model`)."""
        s = self.settings
        environment = serving_environment(
            instance_type=instance_type,
            batch_size=s.inference_batch_size,
            timeout_seconds=s.batch_model_timeout_seconds,
            hypothesis_template=s.hypothesis_template,
            hub_offline=isolated and model_data_url is not None,
        )
        if model_data_url is None:
            # Hub loading (model_source=hub): the container downloads the pinned revision when it starts.
            environment = {**environment, "HF_MODEL_ID": s.model_id, "HF_MODEL_REVISION": s.model_revision}
        return environment

    def _setup(self, instance_type: str, model_data_url: str | None) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What lets two instance types share a model: the container family and the environment."""
        return processor(instance_type), tuple(sorted(self._environment(instance_type, model_data_url).items()))

    def _model(self, id_: str, instance_type: str, model_data_url: str | None, *, isolated: bool) -> SageMakerModel:
        return self.build_model(self, id_, instance_type, model_data_url, isolated=isolated, images=self.images)

    def build_model(
        self,
        scope: Construct,
        id_: str,
        instance_type: str,
        model_data_url: str | None,
        *,
        isolated: bool,
        images: InferenceImages,
    ) -> SageMakerModel:
        """A model in ``scope`` for ``instance_type``'s processor family (image from ``images``, this stack's
        execution role and network); network-isolated when ``isolated`` and the weights come from S3 (a Hub download
        needs egress). The endpoint's stack builds its model with it."""
        environment = self._environment(instance_type, model_data_url, isolated=isolated)
        return SageMakerModel(
            scope,
            id_,
            role=self.execution_role,
            image=images.uri(instance_type),
            environment=environment,
            model_data_url=model_data_url,
            network_isolation=isolated and model_data_url is not None,
            isolation_exception=None
            if isolated and model_data_url is not None
            else (HUB_EXCEPTION if model_data_url is None else SERVERLESS_EXCEPTION),
            network=self.network,
        )

    def _outputs(self) -> None:
        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name, description="Data bucket")
        cdk.CfnOutput(self, "InputPrefix", value=PREFIXES.input, description="Drop .jsonl files here")
        cdk.CfnOutput(self, "OutputPrefix", value=PREFIXES.output, description="Results (<input key>.out)")
        cdk.CfnOutput(self, "ErrorsPrefix", value=PREFIXES.errors, description="Status records of failed files")
        cdk.CfnOutput(
            self, "ModelName", value=self.model.model_name, description="SageMaker model of batch jobs (first type)"
        )
        if self.endpoint_name is not None:
            # The name, not a reference: the endpoint's stack is deployed after this one (stacks/endpoint_stack.py).
            cdk.CfnOutput(self, "EndpointName", value=self.endpoint_name, description="Real-time endpoint")


def _pascal(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` → ``G4dnXlarge`` (construct IDs of the further batch models)."""
    return "".join(part.capitalize() for part in instance_type.split(".")[1:])


def _retention_name(days: int) -> str:
    names = {
        1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
        60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
        365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
        1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
        3653: "TEN_YEARS",
    }  # fmt: skip
    return names[days]
