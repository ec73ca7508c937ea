"""The simulator's resolved settings: one frozen value built by the CLI, read by everything else."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmux_site.simulator.faults import Faults
from llmux_site.simulator.vllm_api import DEFAULT_VERSION, VllmApi, parse_vllm_api

SUFFIX = "+llmux.sim"
# What the simulated vLLM build runs on: a GPU build, or vLLM's CPU build (no sleep mode).
PLATFORMS = ("gpu", "cpu")
# vLLM's --runner: which API the model serves. `auto` serves both here: the simulated model
# has no architecture for vLLM to resolve it from (vLLM resolves an LLM to `generate`).
RUNNERS = ("auto", "generate", "pooling", "draft")
VERSION = f"{parse_vllm_api(DEFAULT_VERSION).version}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How one simulated engine runs (vLLM flags plus the `--sim-*` ones)."""

    model_path: str
    served_model_names: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    enable_sleep_mode: bool = False
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    device: str = "cpu"
    weights_bytes: int = 16 * 1024 * 1024
    seed: int = 0
    weights_file: Path | None = None
    cache_dir: Path = Path(".")
    kv_bytes: int = 0
    startup_seconds: float = 0.2
    load_bytes_per_sec: int = 0
    tokens_per_sec: float = 1000.0
    response_delay_ms: float = 0.0
    ledger_dir: Path = Path(".")
    child_processes: int = 0
    vllm_api: VllmApi = field(default_factory=lambda: parse_vllm_api(DEFAULT_VERSION))
    faults: Faults = field(default_factory=Faults)
    platform: str = "gpu"
    runner: str = "auto"  # resolved: auto, generate or pooling

    @property
    def model_name(self) -> str:
        """The primary served model name (what `/v1/models` lists first)."""
        return self.served_model_names[0]

    def listen_description(self) -> str:
        """Where the engine listens, for humans."""
        if self.uds is not None:
            return f"unix:{self.uds}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
