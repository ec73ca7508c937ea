"""From a model definition to the engine it runs: address, argv, environment, log file."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.launch import EngineCommand, build_engine_command
from llmux_site.core.policy import EvictionPolicy, ProcessAction
from llmux_site.core.supervisor import ProcessSpec
from models_app.models import ModelDefinition, RegistryConfig


def listen_address(model: ModelDefinition) -> ListenAddress:
    if model.uds_path:
        return ListenAddress.unix(model.uds_path)
    assert model.port is not None  # a database constraint guarantees port xor uds_path
    return ListenAddress.tcp(model.port, host=model.host)


def eviction_policy(model: ModelDefinition, config: RegistryConfig) -> EvictionPolicy:
    """The model's own eviction policy, else the registry default."""
    return model.eviction_override() or config.default_eviction()


def engine_command(model: ModelDefinition, config: RegistryConfig) -> EngineCommand:
    """The argv and environment that start this model's engine."""
    policy = eviction_policy(model, config)
    env = dict(model.env)
    if model.engine_kind != "generic":
        # Simulated engines keep their weights cache and GPU ledger in the data directory,
        # where the GPU probe reads the ledger.
        env.setdefault("LLMUX_SIM_CACHE_DIR", str(settings.LLMUX_DIRS["sim_cache"]))
        env.setdefault("LLMUX_SIM_LEDGER_DIR", str(settings.LLMUX_DIRS["ledger"]))
    return build_engine_command(
        model.engine_kind,
        model_path=model.model_path,
        address=listen_address(model),
        extra_args=list(model.extra_args),
        vllm_command=list(model.command) if model.command else config.vllm_command,
        gpu_ids=list(model.gpu_ids),
        env=env,
        criu_compatible=policy.process is ProcessAction.CHECKPOINT,
        generic_argv=list(model.command),
    )


def engine_log_path(model: ModelDefinition) -> Path:
    safe = model.name.replace("/", "__").replace(":", "_")
    return Path(settings.LLMUX_DIRS["logs"]) / f"{safe}.log"


def process_spec(model: ModelDefinition, config: RegistryConfig) -> ProcessSpec:
    command = engine_command(model, config)
    return ProcessSpec(argv=command.argv, log_path=engine_log_path(model), env=command.env)
