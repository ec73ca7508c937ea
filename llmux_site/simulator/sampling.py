"""The generation parameters of a completion, chat or responses request, checked as vLLM 0.32
checks them (its SamplingParams and request models), and the output budget they leave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmux_site.simulator import fields
from llmux_site.simulator.errors import ApiError, validation_error, value_error

# With no max_tokens, vLLM generates until the end of sequence or the context is full; the
# simulated model has no end of sequence, so it stops here (docs/SIMULATOR.md).
DEFAULT_MAX_TOKENS = 16
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True, slots=True)
class Sampling:
    """The generation parameters of one request, validated."""

    max_tokens: int | None  # as asked (None: not given)
    temperature: float
    seed: int | None
    n: int
    stream: bool
    include_usage: bool

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def parse_sampling(body: dict[str, Any], *, token_keys: tuple[str, ...]) -> Sampling:
    """Sampling from a request body; `token_keys` name its output budget, first wins."""
    max_tokens = next(
        (value for key in token_keys if (value := fields.integer(body, key)) is not None), None
    )
    temperature = fields.number(body, "temperature")
    seed = fields.integer(body, "seed")
    n = fields.integer(body, "n")
    stream = fields.boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise validation_error(
            "stream_options", "model_type", "Input should be a valid dictionary", options
        )
    if options and not stream:
        raise value_error(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        seed=seed,
        n=1 if n is None else n,
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
    )
    _check(sampling)
    return sampling


def _check(sampling: Sampling) -> None:
    temperature = sampling.temperature
    if temperature < 0:
        raise value_error(
            f"temperature must be non-negative, got {temperature}.",
            param="temperature",
            value=temperature,
        )
    if temperature > MAX_TEMPERATURE:
        raise value_error(
            f"temperature must be in [0, 2], got {temperature}.",
            param="temperature",
            value=temperature,
        )
    if sampling.n < 1:
        raise value_error(f"n must be at least 1, got {sampling.n}.")
    if sampling.n > 1 and sampling.greedy:
        raise value_error(f"n must be 1 when using greedy sampling, got {sampling.n}.")
    if sampling.max_tokens is not None:
        output_budget(sampling.max_tokens)


def output_budget(max_tokens: int) -> int:
    """Refuse an output budget below one token, as vLLM's SamplingParams does."""
    if max_tokens < 1:
        raise value_error(
            f"max_tokens must be at least 1, got {max_tokens}.",
            param="max_tokens",
            value=max_tokens,
        )
    return max_tokens


def fit_to_context(
    limit: int, prompt_tokens: int, max_tokens: int | None, *, name: str = "max_tokens"
) -> int:
    """The tokens to generate: vLLM refuses a budget or a prompt beyond the context length
    and cuts a budget that would overflow it to what is left (so asking 500 more tokens
    than fit answers with fewer, finish_reason `length`)."""
    if max_tokens is not None and max_tokens > limit:
        raise value_error(
            f"{name}={max_tokens} cannot be greater than max_model_len={limit}. "
            "Please request fewer output tokens.",
            param=name,
            value=max_tokens,
        )
    check_prompt_length(limit, prompt_tokens)
    wanted = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    return output_budget(min(wanted, limit - prompt_tokens))


def check_prompt_length(limit: int, prompt_tokens: int) -> None:
    """vLLM's refusal of a prompt longer than the context (it counts up to limit + 1)."""
    if prompt_tokens > limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains at least {limit + 1} input tokens, which exceeds this limit even "
            "without any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={limit + 1})",
            param="input_tokens",
        )
