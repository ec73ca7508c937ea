"""From a model definition to the engine it runs: address, argv, environment, log file."""

from __future__ import annotations

import getpass
import hashlib
import tempfile
from pathlib import Path

from django.conf import settings

from llmux_site.core import engine_files
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
    _engine_env(model, engine_tmp_dir(model), env)
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


def engine_tmp_dir(model: ModelDefinition) -> str | None:
    """The engine's private TMPDIR, or None where the model's env sets its own.

    Named by a hash of the model's name: vLLM puts its ZeroMQ sockets there, and a socket
    path must fit in 107 bytes with a 36-character name of vLLM's own at its end.
    """
    if "TMPDIR" in model.env:
        return None
    digest = hashlib.sha256(model.name.encode()).hexdigest()[:12]
    return str(Path(settings.LLMUX_DIRS["run"]) / "tmp" / digest)


def _engine_env(model: ModelDefinition, tmp_dir: str | None, env: dict[str, str]) -> None:
    """Defaults the engine's environment gets unless the model sets them."""
    if tmp_dir is not None:
        # torch's inductor keeps its compile cache under TMPDIR by default: keep it where it
        # was, so a private TMPDIR emptied at each start does not make starts slower.
        inductor = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor))
    if model.engine_kind != "generic":
        # Simulated engines keep their weights cache and GPU ledger in the data directory,
        # where the GPU probe reads the ledger.
        env.setdefault("LLMUX_SIM_CACHE_DIR", str(settings.LLMUX_DIRS["sim_cache"]))
        env.setdefault("LLMUX_SIM_LEDGER_DIR", str(settings.LLMUX_DIRS["ledger"]))


def process_spec(model: ModelDefinition, config: RegistryConfig) -> ProcessSpec:
    command = engine_command(model, config)
    return ProcessSpec(
        argv=command.argv,
        log_path=engine_log_path(model),
        env=command.env,
        tmp_dir=engine_tmp_dir(model),
        uds=model.uds_path or None,
    )


def remove_engine_files(model: ModelDefinition) -> None:
    """After `model`'s engine stopped: its private TMPDIR, and its socket if nobody listens."""
    engine_files.remove_engine_files(tmp_dir=engine_tmp_dir(model), uds=model.uds_path or None)
