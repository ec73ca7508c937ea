"""`llmux-sim serve MODEL_PATH [vLLM flags] [--sim-* flags]`: parse, warn, hand over to the server.

Any vLLM flag the simulator does not model is accepted with a one-line warning, so an engine
command line written for vLLM runs the simulator unchanged. Every `--sim-X-Y` flag can also be
set through the environment as `LLMUX_SIM_X_Y`; the flag wins.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from llmux_site.core.gpu_ledger import default_ledger_dir, is_under_shm
from llmux_site.simulator.config import PLATFORMS, RUNNERS, VERSION, SimConfig
from llmux_site.simulator.faults import FAULT_HELP, FaultSpecError, parse_faults, split_fault_env
from llmux_site.simulator.vllm_api import (
    DEFAULT_VERSION,
    LEGACY_VERSION,
    VllmApi,
    VllmApiError,
    parse_vllm_api,
)

MIB = 1024 * 1024
_FAULT_ENV = "LLMUX_SIM_FAULT"
T = TypeVar("T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `64KiB`, `16M` or `1.5GiB` (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def convert(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _sim(parser: argparse.ArgumentParser, name: str, env: Mapping[str, str], **kw: object) -> None:
    """Add `--sim-NAME`, defaulting to env LLMUX_SIM_NAME (argparse converts string defaults)."""
    env_name = "LLMUX_SIM_" + name.upper().replace("-", "_")
    parser.add_argument(f"--sim-{name}", default=env.get(env_name), **kw)  # type: ignore[arg-type]


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The `serve` parser: vLLM's flags that matter here, then the simulator's own."""
    p = argparse.ArgumentParser(prog="llmux-sim serve", description="Simulated vLLM engine.")
    p.add_argument("model_path", metavar="MODEL_PATH")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--uds", default=None, help="listen on this unix socket only")
    p.add_argument("--enable-sleep-mode", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runner", choices=RUNNERS, default="auto")
    p.add_argument("--convert", choices=("auto", "classify", "embed", "none"), default="auto")
    size, count, seconds = parse_size, _non_negative(int), _non_negative(float)
    _sim(p, "weights-bytes", env, type=size, help="weights size (default 16MiB)")
    _sim(p, "seed", env, type=int, help="weights seed (default: derived from MODEL_PATH)")
    _sim(p, "weights-file", env, type=Path, help="weights file (default: generated)")
    _sim(p, "cache-dir", env, type=Path, help="where generated weights are kept")
    _sim(p, "kv-bytes", env, type=size, help="KV cache size (default util * 32MiB)")
    _sim(p, "startup-seconds", env, type=seconds, help="delay before binding (0.2)")
    _sim(p, "load-bytes-per-sec", env, type=size, help="weights load rate (0 = unthrottled)")
    _sim(p, "tokens-per-sec", env, type=seconds, help="decode rate (1000; 0 = no delay)")
    _sim(p, "response-delay-ms", env, type=seconds, help="delay before the first token (0)")
    _sim(p, "ledger-dir", env, type=Path, help="GPU ledger directory")
    _sim(p, "child-processes", env, type=count, help="children that die with the engine (0)")
    _sim(p, "vllm-api", env, help=f"control API of this vLLM, 0.15-0.33 ({DEFAULT_VERSION})")
    _sim(p, "legacy-api", env, type=_truthy, nargs="?", const=True, help="= --sim-vllm-api 0.17")
    _sim(p, "platform", env, choices=PLATFORMS, help="gpu (default), or cpu: vLLM's CPU build")
    p.add_argument("--sim-fault", action="append", default=None, help=FAULT_HELP)
    return p


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def default_seed(model_path: str) -> int:
    """A stable seed per model path, so two engines of one model hold the same weights."""
    return int.from_bytes(hashlib.sha256(model_path.encode()).digest()[:8], "little")


def describe_unknown(extras: Sequence[str]) -> list[str]:
    """Group unknown argv items into `--flag [value]` strings for the warning."""
    groups: list[str] = []
    for item in extras:
        last = groups[-1] if groups else ""
        if last.startswith("-") and " " not in last and "=" not in last and item[:1] != "-":
            groups[-1] += f" {item}"
        else:
            groups.append(item)
    return groups


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> SimConfig:
    """Turn `serve …` argv into a SimConfig; exit 2 with a message on bad input."""
    parser = build_parser(env)
    ns, extras = parser.parse_known_args(argv)
    for flag in describe_unknown(extras):
        print(f"llmux-sim: warning: ignoring unsupported vLLM flag {flag}", file=sys.stderr)
    specs = ns.sim_fault if ns.sim_fault is not None else split_fault_env(env.get(_FAULT_ENV, ""))
    try:
        faults = parse_faults(specs)
    except FaultSpecError as exc:
        parser.error(f"--sim-fault: {exc}")
    if not 0 < ns.gpu_memory_utilization <= 1:
        parser.error("--gpu-memory-utilization must be in (0, 1]")
    if ns.tensor_parallel_size < 1:
        parser.error("--tensor-parallel-size must be at least 1")
    ledger_dir = ns.sim_ledger_dir or default_ledger_dir()
    if is_under_shm(ledger_dir):
        parser.error("--sim-ledger-dir must not be under /dev/shm")
    home_cache = Path.home() / ".cache" / "llmux-sim"
    return SimConfig(
        model_path=ns.model_path,
        served_model_names=tuple(ns.served_model_name or [ns.model_path]),
        host=ns.host,
        port=ns.port,
        uds=ns.uds,
        enable_sleep_mode=ns.enable_sleep_mode,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        tensor_parallel_size=ns.tensor_parallel_size,
        max_model_len=ns.max_model_len,
        device=ns.device,
        weights_bytes=_or(ns.sim_weights_bytes, 16 * MIB),
        seed=_or(ns.sim_seed, default_seed(ns.model_path)),
        weights_file=ns.sim_weights_file,
        cache_dir=ns.sim_cache_dir or home_cache,
        kv_bytes=_or(ns.sim_kv_bytes, int(ns.gpu_memory_utilization * 32 * MIB)),
        startup_seconds=_or(ns.sim_startup_seconds, 0.2),
        load_bytes_per_sec=_or(ns.sim_load_bytes_per_sec, 0),
        tokens_per_sec=_or(ns.sim_tokens_per_sec, 1000.0),
        response_delay_ms=_or(ns.sim_response_delay_ms, 0.0),
        ledger_dir=ledger_dir,
        child_processes=_or(ns.sim_child_processes, 0),
        vllm_api=_vllm_api(parser, ns.sim_vllm_api, legacy=bool(ns.sim_legacy_api)),
        platform=ns.sim_platform or "gpu",
        runner=resolve_runner(ns.runner, ns.convert),
        faults=faults,
    )


def resolve_runner(runner: str, convert: str) -> str:
    """vLLM's runner from --runner and --convert: a conversion to embed or classify makes a
    pooling model; `draft` serves like `generate`."""
    if runner == "auto" and convert in ("embed", "classify"):
        return "pooling"
    return "generate" if runner == "draft" else runner


def check_platform(config: SimConfig) -> None:
    """Refuse at start what vLLM refuses on the simulated platform.

    vLLM's CPU build stops at start with a traceback whose message is this one (a pydantic
    ValidationError there) when given --enable-sleep-mode; here the exception is raised out
    of `main`, so the log holds a real traceback and the exit status is 1, as there.
    """
    if config.platform == "cpu" and config.enable_sleep_mode:
        raise ValueError("Sleep mode is not supported on current platform.")


def _vllm_api(parser: argparse.ArgumentParser, text: str | None, *, legacy: bool) -> VllmApi:
    """`--sim-vllm-api`, else the family `--sim-legacy-api` stands for, else the newest."""
    try:
        return parse_vllm_api(text or (LEGACY_VERSION if legacy else DEFAULT_VERSION))
    except VllmApiError as exc:
        parser.error(f"--sim-vllm-api: {exc}")


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


USAGE = "usage: llmux-sim serve MODEL_PATH [--port P | --uds PATH] [vLLM flags] [--sim-* flags]"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of `llmux-sim`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if args else 2
    if args[0] in {"--version", "version"}:
        print(VERSION)
        return 0
    if args[0] != "serve":
        print(f"{USAGE}\nllmux-sim: unknown command {args[0]!r}", file=sys.stderr)
        return 2
    config = parse_args(args[1:], os.environ)
    check_platform(config)
    # Imported late so --help and argument errors never pay for aiohttp.
    from llmux_site.simulator.server import run

    return run(config)
