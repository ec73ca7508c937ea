"""Build an engine's argv and environment from its model definition (pure, no I/O but PATH).

Three kinds of engine: ``vllm`` (``vllm serve``), ``simulator`` (the project's engine
simulator, run exactly like vLLM) and ``generic`` (any OpenAI-compatible server, from an
argv template). The argv is always a list: nothing here goes through a shell.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.no_io_uring import COMMAND as NO_IO_URING_COMMAND

__all__ = [
    "SIMULATOR_COMMAND",
    "SLEEP_FLAG",
    "EngineCommand",
    "EngineKind",
    "LaunchError",
    "build_engine_command",
    "needs_sleep_mode",
    "resolve_program",
    "sleep_mode_in",
    "tensor_parallel_size",
]

EngineKind = Literal["vllm", "simulator", "generic"]

SIMULATOR_SCRIPT = "llmux-sim"
SIMULATOR_COMMAND: tuple[str, ...] = (sys.executable, "-m", "llmux_site.simulator")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{(model_path|host|port|uds)\}")
_ADDRESS_FLAGS = ("--host", "--port", "--uds")
_TP_FLAGS = ("--tensor-parallel-size", "-tp")
_TP_REQUIRED = ("--enforce-eager", "--disable-custom-all-reduce")
_NO_ENV: Mapping[str, str] = MappingProxyType({})
SLEEP_FLAG = "--enable-sleep-mode"
_SERVED_NAME_FLAG = "--served-model-name"


class LaunchError(ValueError):
    """A model definition that cannot be turned into an engine command."""


@dataclass(frozen=True, slots=True)
class EngineCommand:
    """The argv and environment overrides to start an engine with, and config warnings."""

    argv: list[str]
    env: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def build_engine_command(
    kind: EngineKind | str,
    *,
    model_path: str,
    address: ListenAddress,
    extra_args: Sequence[str] = (),
    vllm_command: Sequence[str] | str = "vllm",
    gpu_ids: Sequence[int] = (),
    env: Mapping[str, str] = _NO_ENV,
    criu_compatible: bool = False,
    generic_argv: Sequence[str] = (),
    search_path: str | None = None,
    served_model_name: str | None = None,
    eviction: EvictionPolicy | None = None,
    sleep_mode: bool = True,
) -> EngineCommand:
    """The command that starts ``model_path`` as an engine of ``kind`` listening at ``address``.

    ``env`` is the model's own environment and wins over the defaults set here.
    ``search_path`` is the PATH used to resolve ``vllm_command`` (default: this process's).
    ``served_model_name`` is passed as ``--served-model-name`` (vLLM then answers to it).
    ``sleep_mode`` says whether the engine's platform has vLLM sleep mode: the flag goes in
    only there, and only when ``eviction`` sleeps (None: not known, so it may).
    """
    if kind not in get_args(EngineKind):
        raise LaunchError(f"unknown engine kind {kind!r}; expected one of {get_args(EngineKind)}")
    _check_text("model_path", model_path)
    if not model_path:
        raise LaunchError("model_path is empty")
    extra = _checked_args("extra_args", extra_args)
    model_env = _checked_env(env)
    warnings: list[str] = []
    if kind == "generic":
        argv = [*_generic_argv(generic_argv, model_path, address, warnings), *extra]
    else:
        program = (
            list(SIMULATOR_COMMAND)
            if kind == "simulator"
            else resolve_program(vllm_command, search_path=search_path)
        )
        sleep = sleep_mode and needs_sleep_mode(eviction)
        argv = [*program, *_serve_args(model_path, address, extra, served_model_name, sleep)]
        warnings.extend(_tensor_parallel_warnings(extra))
        if not sleep_mode and sleep_mode_in(extra):
            warnings.append(
                "extra_args turn on vLLM sleep mode, which this engine's platform lacks "
                "(LLMUX_SLEEP_MODE): vLLM's CPU build refuses to start with it"
            )
    if criu_compatible:
        # CRIU cannot dump an io_uring, and libuv (uvloop, vLLM's API server) opens one
        # whatever UV_USE_IO_URING says: the engine runs with io_uring_setup refused.
        argv = [*NO_IO_URING_COMMAND, *argv]
    engine_env = _default_env(kind, gpu_ids, criu_compatible=criu_compatible)
    engine_env.update(model_env)
    return EngineCommand(argv=argv, env=engine_env, warnings=warnings)


def _serve_args(
    model_path: str,
    address: ListenAddress,
    extra: list[str],
    served_model_name: str | None,
    sleep: bool,
) -> list[str]:
    """`serve MODEL --port|--uds … [--served-model-name N] [--enable-sleep-mode] EXTRA…`."""
    _reject_address_flags(extra)
    sleep_flag = [SLEEP_FLAG] if sleep and not sleep_mode_in(extra) else []
    served = _served_name(served_model_name, extra)
    return ["serve", model_path, *address.cli_args(), *served, *sleep_flag, *extra]


def _default_env(
    kind: EngineKind | str, gpu_ids: Sequence[int], *, criu_compatible: bool
) -> dict[str, str]:
    engine_env = {"NO_COLOR": "1"}
    if kind != "generic":
        # vLLM only exposes /sleep, /wake_up and /collective_rpc in dev mode.
        engine_env["VLLM_SERVER_DEV_MODE"] = "1"
    if gpu_ids:
        engine_env["CUDA_VISIBLE_DEVICES"] = _visible_devices(gpu_ids)
    if criu_compatible:
        # io_uring and libuv keep kernel state CRIU cannot dump (the filter in
        # no_io_uring is what holds for uvloop; these ask the libraries nicely too).
        engine_env["UV_USE_IO_URING"] = "0"
        engine_env["USE_LIBUV"] = "0"
    return engine_env


def needs_sleep_mode(eviction: EvictionPolicy | None) -> bool:
    """Whether an engine evicted by `eviction` calls vLLM's /sleep (None: it may)."""
    return eviction is None or eviction.vllm_sleep_level is not None


def sleep_mode_in(argv: Sequence[str]) -> bool:
    """Whether an engine's argv turns vLLM sleep mode on."""
    return any(arg == SLEEP_FLAG or arg.startswith(f"{SLEEP_FLAG}=") for arg in argv)


def _served_name(name: str | None, extra: Sequence[str]) -> list[str]:
    if not name or any(arg.split("=", 1)[0] == _SERVED_NAME_FLAG for arg in extra):
        return []  # vLLM serves the model path then, or extra_args name it already
    return [_SERVED_NAME_FLAG, name]


def resolve_program(command: Sequence[str] | str, *, search_path: str | None = None) -> list[str]:
    """The program part of an engine argv, from a config's ``vllm_command``.

    A string is split like a shell would split words (no expansion, no shell). The
    simulator's ``llmux-sim`` script is found next to this interpreter when it is not on
    PATH (a virtualenv that is not activated), or run as a module as the last resort.
    """
    words = shlex.split(command) if isinstance(command, str) else list(command)
    _check_args_items("vllm_command", words)
    if not words:
        raise LaunchError("vllm_command is empty")
    if words[0] == SIMULATOR_SCRIPT:
        path = search_path if search_path is not None else os.environ.get("PATH", os.defpath)
        if shutil.which(SIMULATOR_SCRIPT, path=path) is None:
            beside_python = Path(sys.executable).parent / SIMULATOR_SCRIPT
            if os.access(beside_python, os.X_OK):
                return [str(beside_python), *words[1:]]
            return [*SIMULATOR_COMMAND, *words[1:]]
    return words


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise LaunchError(f"{what} is {type(value).__name__} ({value!r}), expected a string")
    if "\0" in value:
        raise LaunchError(f"{what} contains a NUL byte: {value!r}")


def _check_args_items(what: str, items: Sequence[object]) -> None:
    for index, item in enumerate(items):
        _check_text(f"{what}[{index}]", item)


def _checked_args(what: str, args: Sequence[str]) -> list[str]:
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise LaunchError(
            f"{what} must be a list of strings (one argv item each), got {type(args).__name__}"
            f" {args!r}"
        )
    _check_args_items(what, args)
    return list(args)


def _checked_env(env: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise LaunchError(f"env must be a mapping of names to strings, got {type(env).__name__}")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise LaunchError(
                f"invalid environment variable name {name!r}: use letters, digits and "
                "underscores, not starting with a digit"
            )
        _check_text(f"env[{name!r}]", value)
    return dict(env)


def _reject_address_flags(args: Sequence[str]) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _ADDRESS_FLAGS:
            raise LaunchError(
                f"extra_args must not contain {flag}: the listen address is set from the "
                "model's address (loopback port or unix socket)"
            )


def _generic_argv(
    template: Sequence[str], model_path: str, address: ListenAddress, warnings: list[str]
) -> list[str]:
    argv = _checked_args("generic_argv", template)
    if not argv:
        raise LaunchError("a generic engine needs an argv template (generic_argv)")
    values: dict[str, str | None] = {
        "model_path": model_path,
        "host": None if address.is_unix else address.host,
        "port": None if address.port is None else str(address.port),
        "uds": address.uds,
    }
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values[name]
        if value is None:
            listens_on = "a unix socket" if address.is_unix else "a TCP port"
            raise LaunchError(
                f"the generic argv template uses {{{name}}} but the model listens on "
                f"{listens_on} ({address})"
            )
        used.add(name)
        return value

    result = [_PLACEHOLDER.sub(substitute, item) for item in argv]
    if not used & {"port", "uds"}:
        warnings.append(
            "the generic argv template has no {port} or {uds} placeholder: make sure the "
            f"server listens on {address}"
        )
    return result


def tensor_parallel_size(args: Sequence[str]) -> int:
    """vLLM's --tensor-parallel-size (or -tp) in an argv; 1 when absent."""
    size = 1
    for index, arg in enumerate(args):
        flag, has_value, value = arg.partition("=")
        if flag not in _TP_FLAGS:
            continue
        if not has_value:
            value = args[index + 1] if index + 1 < len(args) else ""
        try:
            size = int(value)
        except ValueError:
            raise LaunchError(f"{flag} needs an integer, got {value!r}") from None
    return size


def _tensor_parallel_warnings(args: Sequence[str]) -> list[str]:
    size = tensor_parallel_size(args)
    missing = [flag for flag in _TP_REQUIRED if flag not in args]
    if size <= 1 or not missing:
        return []
    return [
        f"tensor-parallel-size is {size} but {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} missing: CUDA suspend and CRIU checkpoints "
        "of a TP>1 engine need --enforce-eager and --disable-custom-all-reduce"
    ]


def _visible_devices(gpu_ids: Sequence[int]) -> str:
    if isinstance(gpu_ids, str | bytes):
        raise LaunchError(f"gpu_ids must be a list of integers, got {gpu_ids!r}")
    for gpu in gpu_ids:
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise LaunchError(f"gpu_ids must be non-negative integers, got {gpu!r}")
    if len(set(gpu_ids)) != len(gpu_ids):
        raise LaunchError(f"gpu_ids has duplicates: {list(gpu_ids)}")
    return ",".join(str(gpu) for gpu in gpu_ids)
