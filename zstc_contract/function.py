"""What the entry points of both batch functions share (shipped in the contract layer).

Settings are read once per container and a bad variable fails the cold start, naming it; the Powertools logger and
metrics are the function's (or the caller's: the offline emulation writes them to a file); the boto3 clients are
created on first use, once per container; Lambda's ``handler`` is built from ``os.environ`` when the runtime first
looks it up, during initialisation. Powertools (a layer of its own) is passed in by the function, not imported here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

import boto3
from botocore.config import Config

from zstc_contract.settings import Env

METRICS_NAMESPACE: Final = "ZeroShotClassification"
# (service name, client config) → a boto3 client; the default is boto3.client (the function's own credentials).
ClientFactory = Callable[[str, Config], Any]


def default_client(name: str, config: Config) -> Any:
    return boto3.client(name, config=config)  # type: ignore[call-overload]


class FunctionRuntime:
    """A batch function's Lambda handler: its settings, Powertools logger and metrics, clients, and its work.

    A function subclasses it as ``class F(FunctionRuntime, service=..., max_attempts=..., powertools=(Logger,
    Metrics))`` and defines :meth:`configure` (read the settings; a bad variable raises, naming it) and
    :meth:`process` (one invocation). ``clients`` makes the boto3 clients (default: ``boto3.client``);
    ``logger`` / ``metrics`` replace the Powertools ones (e.g. to write elsewhere than stdout). The service name is
    the environment's ``POWERTOOLS_SERVICE_NAME``, else ``service_name``.
    """

    service_name: str
    client_config: Config
    make_logger: Callable[..., Any]
    make_metrics: Callable[..., Any]

    def __init_subclass__(
        cls,
        *,
        service: str,
        max_attempts: int,
        powertools: tuple[Callable[..., Any], Callable[..., Any]],
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.service_name = service
        cls.client_config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        cls.make_logger, cls.make_metrics = powertools

    def __init__(
        self, env: Mapping[str, str], clients: ClientFactory | None = None, *, logger: Any = None, metrics: Any = None
    ) -> None:
        self.configure(env)
        name = env.get(Env.SERVICE_NAME, self.service_name)
        self.logger = logger or self.make_logger(service=name)
        # The service is passed explicitly: Powertools shares its dimension set between Metrics instances of a process.
        namespace = env.get(Env.METRICS_NAMESPACE, METRICS_NAMESPACE)
        self.metrics = metrics or self.make_metrics(namespace=namespace, service=name)
        self._make_client = clients or default_client
        self._clients: dict[str, Any] = {}
        # Lambda context in the logs (state cleared per invocation), metrics flushed after each invocation.
        self._handle = self.logger.inject_lambda_context(clear_state=True)(self.metrics.log_metrics(self.process))

    def configure(self, env: Mapping[str, str]) -> None:
        raise NotImplementedError

    def process(self, event: dict[str, Any], context: Any) -> Any:
        raise NotImplementedError

    def client(self, name: str) -> Any:
        """The function's client for an AWS service, created on first use (once per container)."""
        if name not in self._clients:
            self._clients[name] = self._make_client(name, self.client_config)
        return self._clients[name]

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        return self._handle(event, context)


def lazy_handler(module: str, build: Callable[[Mapping[str, str]], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that builds the module's ``handler`` from ``os.environ`` on first access:
    Lambda's runtime looks it up while initialising the container, so the settings are read then, once."""

    def module_getattr(name: str) -> Any:
        if name == "handler":
            built = build(os.environ)
            vars(sys.modules[module])["handler"] = built
            return built
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return module_getattr
