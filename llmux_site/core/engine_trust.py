"""What in a model definition only an administrator may decide. Pure.

An engine runs as the llmux user (root on the usual GPU host), so whatever decides its
program, its environment, code it loads or files it reads can run anything on the host.
Operators tune engines (sizes, lengths, parallelism, dtype) through the API and the
dashboard; everything else is an administrator's decision. This module names, for one
model, each *privilege* its definition uses; the registry service refuses a change by a
non-administrator that adds one (privileges an administrator already set may stay).

The allow-lists are the one place that says what operators may set (docs/API.md quotes
them). A flag not listed is privileged, so a new vLLM flag is safe until someone lists it.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

__all__ = [
    "OPERATOR_ENV",
    "OPERATOR_FLAGS",
    "FlagValue",
    "Privilege",
    "privileges",
]


class FlagValue(enum.Enum):
    """What follows an allow-listed flag on the command line."""

    NONE = "none"  # a switch: `--enforce-eager`
    ONE = "one"  # one value: `--max-model-len 4096` or `--max-model-len=4096`
    OPTIONAL = "optional"  # a value unless the next item is a flag
    PATH = "path"  # a local path, which must lie under the path roots


_SWITCHES = (
    "--enforce-eager",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--disable-custom-all-reduce",
    "--disable-log-requests",
    "--enable-log-requests",
    "--disable-log-stats",
    "--enable-sleep-mode",
    "--enable-auto-tool-choice",
    "--async-scheduling",
    "--disable-sliding-window",
    "--disable-cascade-attn",
    "--enable-expert-parallel",
)
_VALUES = (
    # sizes and lengths
    "--max-model-len",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--max-seq-len-to-capture",
    "--max-logprobs",
    "--block-size",
    "--swap-space",
    "--cpu-offload-gb",
    "--gpu-memory-utilization",
    "--kv-cache-memory-bytes",
    "--num-gpu-blocks-override",
    "--limit-mm-per-prompt",
    # parallelism
    "--tensor-parallel-size",
    "-tp",
    "--pipeline-parallel-size",
    "-pp",
    "--data-parallel-size",
    "-dp",
    # numerics
    "--dtype",
    "--kv-cache-dtype",
    "--quantization",
    "-q",
    "--seed",
    # serving behaviour that loads no code and reads no file
    "--served-model-name",
    "--tool-call-parser",
    "--reasoning-parser",
    "--override-generation-config",
    "--tokenizer-mode",
    "--uvicorn-log-level",
    "--revision",
    "--tokenizer-revision",
    "--device",
    # the simulator's own knobs (llmux-sim); its path flags are below
    "--sim-weights-bytes",
    "--sim-seed",
    "--sim-kv-bytes",
    "--sim-startup-seconds",
    "--sim-load-bytes-per-sec",
    "--sim-tokens-per-sec",
    "--sim-response-delay-ms",
    "--sim-child-processes",
    "--sim-vllm-api",
    "--sim-fault",
)
# Path-valued flags an operator may point under the path roots. `--chat-template` also
# takes the template itself (vLLM renders it in a sandbox), recognised by its braces.
_PATHS = ("--chat-template", "--download-dir", "--sim-weights-file", "--sim-cache-dir")

OPERATOR_FLAGS: Final[Mapping[str, FlagValue]] = {
    **dict.fromkeys(_SWITCHES, FlagValue.NONE),
    **dict.fromkeys(_VALUES, FlagValue.ONE),
    "--sim-legacy-api": FlagValue.OPTIONAL,
    **dict.fromkeys(_PATHS, FlagValue.PATH),
}

# Environment variables an operator may set: logging, thread counts, backends and
# offline switches. Anything that changes what is loaded or executed (LD_PRELOAD, PATH,
# PYTHONPATH, VLLM_PLUGINS, HF_ENDPOINT, ...) is an administrator's.
OPERATOR_ENV: Final = frozenset(
    {
        "VLLM_LOGGING_LEVEL",
        "VLLM_ATTENTION_BACKEND",
        "VLLM_USE_V1",
        "VLLM_CPU_KVCACHE_SPACE",
        "VLLM_CPU_OMP_THREADS_BIND",
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN",
        "VLLM_ENGINE_ITERATION_TIMEOUT_S",
        "VLLM_RPC_TIMEOUT",
        "VLLM_NO_USAGE_STATS",
        "DO_NOT_TRACK",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
        "NCCL_DEBUG",
        "NCCL_P2P_DISABLE",
        "NCCL_IB_DISABLE",
        "CUDA_DEVICE_ORDER",
        "PYTORCH_CUDA_ALLOC_CONF",
        "LLMUX_SIM_FAULT",
        "LLMUX_SIM_TOKENS_PER_SEC",
        "LLMUX_SIM_RESPONSE_DELAY_MS",
        "LLMUX_SIM_STARTUP_SECONDS",
    }
)


class Privilege(NamedTuple):
    """One thing in a definition only an administrator may set: the field, and what."""

    field: str
    what: str

    def __str__(self) -> str:
        return f"{self.field}: {self.what}"


def privileges(
    *,
    engine: str | None,
    command: Sequence[str],
    model_path: str,
    extra_args: Sequence[str],
    env: Mapping[str, str],
    runs_simulator: bool,
    is_local_path: Callable[[str], bool],
) -> frozenset[Privilege]:
    """Every privilege this definition uses.

    `runs_simulator`: the engine is llmux's simulator, whose model_path is only a label.
    `is_local_path`: whether a value is an absolute path under the path roots.
    """
    found: set[Privilege] = set()
    if engine == "generic":
        found.add(Privilege("engine", "generic (runs its own command)"))
    if command:
        found.add(Privilege("command", shlex.join(command)))
    if not runs_simulator and not is_local_path(model_path):
        found.add(Privilege("model_path", f"{model_path} (not a local path under the roots)"))
    found.update(
        Privilege("env", f"{name}={value}")
        for name, value in env.items()
        if name not in OPERATOR_ENV
    )
    found.update(_argument_privileges(extra_args, is_local_path))
    return frozenset(found)


def _argument_privileges(
    args: Sequence[str], is_local_path: Callable[[str], bool]
) -> Iterator[Privilege]:
    for flag, value in _flags(args):
        kind = OPERATOR_FLAGS.get(flag)
        shown = flag if value is None else f"{flag} {value}"
        if kind is None:
            yield Privilege("extra_args", shown)
        elif (
            kind is FlagValue.PATH
            and value is not None
            and not _safe_path(flag, value, is_local_path)
        ):
            yield Privilege("extra_args", f"{shown} (outside the path roots)")


def _safe_path(flag: str, value: str, is_local_path: Callable[[str], bool]) -> bool:
    if flag == "--chat-template" and "{" in value:
        return True  # the template itself, not a file
    return is_local_path(value)


def _flags(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """(flag, its value or None) for each flag; a stray item is a flag of its own.

    Values are taken by what the allow-list says a flag takes; an unknown flag takes the
    items up to the next flag (so `--foo bar` is reported whole).
    """
    index = 0
    while index < len(args):
        item = args[index]
        index += 1
        if not item.startswith("-") or item == "-":
            yield item, None  # a bare item: an extra positional argument
            continue
        flag, equals, inline = item.partition("=")
        kind = OPERATOR_FLAGS.get(flag)
        follows = index < len(args) and not args[index].startswith("-")
        if equals:
            yield flag, inline
        elif kind is None:
            start = index
            while index < len(args) and not args[index].startswith("-"):
                index += 1
            yield flag, " ".join(args[start:index]) or None
        elif (kind in (FlagValue.ONE, FlagValue.PATH) and index < len(args)) or (
            kind is FlagValue.OPTIONAL and follows
        ):
            yield flag, args[index]
            index += 1
        else:
            yield flag, None
