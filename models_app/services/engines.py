"""From a model definition to the engine it runs: address, argv, environment, log file."""

from __future__ import annotations

import getpass
import hashlib
import itertools
import os
import shlex
import tempfile
from pathlib import Path

from django.conf import settings

from llmux_site.core import engine_files
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction
from llmux_site.core.gpu import host_has_nvidia_gpu
from llmux_site.core.launch import SIMULATOR_SCRIPT, EngineCommand, build_engine_command
from llmux_site.core.processes import ProcessSpec
from models_app.models import ModelDefinition, RegistryConfig


def listen_address(model: ModelDefinition) -> ListenAddress:
    if model.uds_path:
        return ListenAddress.unix(model.uds_path)
    assert model.port is not None  # a database constraint guarantees port xor uds_path
    return ListenAddress.tcp(model.port, host=model.host)


def eviction_policy(model: ModelDefinition, config: RegistryConfig) -> EvictionPolicy:
    """The model's own eviction policy, else the registry default."""
    return model.eviction_override() or config.default_eviction()


def runs_simulator(model: ModelDefinition, config: RegistryConfig) -> bool:
    """Whether the model's engine is llmux's simulator (kind, or a `llmux-sim` command)."""
    if model.engine_kind != "vllm":
        return model.engine_kind == "simulator"
    words = list(model.command) or shlex.split(config.vllm_command or "vllm")
    return bool(words) and os.path.basename(words[0]) == SIMULATOR_SCRIPT


def _simulates_cpu_build(model: ModelDefinition) -> bool:
    pairs = itertools.pairwise([*model.extra_args, ""])
    cpu = any(a == "--sim-platform=cpu" or (a, b) == ("--sim-platform", "cpu") for a, b in pairs)
    return cpu or model.env.get("LLMUX_SIM_PLATFORM") == "cpu"


def sleep_mode_available(model: ModelDefinition, config: RegistryConfig) -> bool:
    """Whether the platform of the model's engine has vLLM sleep mode (LLMUX_SLEEP_MODE).

    `auto`: a GPU build of vLLM has it where the host has an NVIDIA GPU; vLLM's CPU build
    never; the simulator does, as a GPU vLLM would, unless it plays the CPU build.
    """
    if model.engine_kind == "generic":
        return False  # llmux adds no flag to a generic command; its config cannot sleep
    if settings.LLMUX_SLEEP_MODE != "auto":
        return bool(settings.LLMUX_SLEEP_MODE == "on")
    if runs_simulator(model, config):
        return not _simulates_cpu_build(model)
    return host_has_nvidia_gpu()


def sleep_mode_warning(model: ModelDefinition, config: RegistryConfig) -> str | None:
    """Why `model`'s eviction cannot work as configured on this host, if it cannot."""
    policy = eviction_policy(model, config)
    if policy.vllm_sleep_level is None or sleep_mode_available(model, config):
        return None
    return (
        f"{model.name}: eviction {policy.label} needs vLLM sleep mode, which this host's "
        f"platform lacks for its engine (LLMUX_SLEEP_MODE={settings.LLMUX_SLEEP_MODE}): "
        "it will stop the engine instead"
    )


def engine_command(
    model: ModelDefinition, config: RegistryConfig, eviction: EvictionPolicy | None = None
) -> EngineCommand:
    """The argv and environment that start this model's engine, to be evicted by `eviction`
    (default: its own policy; an operator's override when one is set)."""
    policy = eviction or eviction_policy(model, config)
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
        served_model_name=model.served_model_name or None,
        eviction=policy,
        sleep_mode=sleep_mode_available(model, config),
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
    return str(_tmp_root() / digest)


# A Unix socket path holds 107 bytes; vLLM names its sockets in TMPDIR with 36 characters.
_SOCKET_PATH_MAX = 107
_VLLM_SOCKET_NAME = 37  # "/" and a uuid4


def _tmp_root() -> Path:
    """Where engines' private TMPDIRs go (a socket of vLLM's own in one must fit)."""
    return socket_dir(13 + _VLLM_SOCKET_NAME, "tmp")


def socket_dir(name_bytes: int, sub: str = "") -> Path:
    """A directory of this data directory's own where a Unix socket whose name (from the
    directory on) takes `name_bytes` bytes fits: the run directory (or `sub` in it), unless
    its path is so long that the socket would not fit (a deep data directory); then a
    directory of this user's own in the system's temporary directory, one per data
    directory (short enough for any name this module makes)."""
    root = Path(settings.LLMUX_DIRS["run"]) / sub if sub else Path(settings.LLMUX_DIRS["run"])
    if len(os.fsencode(root)) + name_bytes <= _SOCKET_PATH_MAX:
        return root
    data = hashlib.sha256(str(settings.DATA_DIR).encode()).hexdigest()[:8]
    short = Path(tempfile.gettempdir()) / f"llmux-{os.getuid()}-{data}"
    engine_files.private_root(str(short))
    return short


def _engine_env(model: ModelDefinition, tmp_dir: str | None, env: dict[str, str]) -> None:
    """Defaults the engine's environment gets unless the model sets them."""
    if tmp_dir is not None:
        # torch's inductor keeps its compile cache under TMPDIR by default: keep it in the
        # data directory instead, so a private TMPDIR emptied at each start does not make
        # starts slower and nothing of an engine is left in the system's /tmp.
        inductor = Path(settings.DATA_DIR) / "cache" / f"torchinductor_{getpass.getuser()}"
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor))
    if model.engine_kind != "generic":
        # Simulated engines keep their weights cache and GPU ledger in the data directory,
        # where the GPU probe reads the ledger.
        env.setdefault("LLMUX_SIM_CACHE_DIR", str(settings.LLMUX_DIRS["sim_cache"]))
        env.setdefault("LLMUX_SIM_LEDGER_DIR", str(settings.LLMUX_DIRS["ledger"]))


def process_spec(
    model: ModelDefinition, config: RegistryConfig, eviction: EvictionPolicy | None = None
) -> ProcessSpec:
    command = engine_command(model, config, eviction)
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
