"""Fault injection for the engine simulator: parse `--sim-fault` specs into one frozen value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

SLEEP_MODES = frozenset({"fail", "hang", "noop"})
WAKE_MODES = frozenset({"fail", "hang"})
HEALTH_MODES = frozenset({"fail", "hang"})
CRASH_STEPS = frozenset({"startup", "sleep", "wake", "request"})
FLAGS = frozenset({"corrupt-on-wake", "ignore-sigterm", "crash-on-sleep-with-inflight"})

FAULT_HELP = (
    "sleep=fail|hang|noop, wake=fail|hang, health=fail|hang, "
    "crash=startup|sleep|wake|request, wake-fail-after=N, start-delay=SECONDS, "
    "corrupt-on-wake, decode=stall, ignore-sigterm, crash-on-sleep-with-inflight"
)


class FaultSpecError(ValueError):
    """A `--sim-fault` spec the simulator does not understand."""


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults an engine currently injects; the empty value injects none."""

    sleep: str | None = None
    wake: str | None = None
    health: str | None = None
    crash: frozenset[str] = field(default_factory=frozenset)
    wake_fail_after: int | None = None
    start_delay: float = 0.0
    corrupt_on_wake: bool = False
    decode_stall: bool = False
    ignore_sigterm: bool = False
    crash_on_sleep_with_inflight: bool = False

    def specs(self) -> list[str]:
        """The specs that parse back into this value, in a stable order."""
        out = [f"{k}={v}" for k, v in (("sleep", self.sleep), ("wake", self.wake)) if v]
        if self.health:
            out.append(f"health={self.health}")
        out.extend(f"crash={step}" for step in sorted(self.crash))
        if self.wake_fail_after is not None:
            out.append(f"wake-fail-after={self.wake_fail_after}")
        if self.start_delay:
            out.append(f"start-delay={self.start_delay:g}")
        if self.decode_stall:
            out.append("decode=stall")
        flags = (
            ("corrupt-on-wake", self.corrupt_on_wake),
            ("ignore-sigterm", self.ignore_sigterm),
            ("crash-on-sleep-with-inflight", self.crash_on_sleep_with_inflight),
        )
        out.extend(name for name, on in flags if on)
        return out


def _choice(key: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise FaultSpecError(f"{key}={value!r}: expected one of {', '.join(sorted(allowed))}")
    return value


def _number(key: str, value: str, *, integer: bool) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise FaultSpecError(f"{key}={value!r}: not a number") from None
    if number < 0:
        raise FaultSpecError(f"{key}={value!r}: must not be negative")
    return number


def parse_faults(specs: Iterable[str]) -> Faults:
    """Parse specs like `sleep=hang` or `corrupt-on-wake`; raise FaultSpecError on any mistake."""
    faults = Faults()
    for raw in specs:
        spec = raw.strip()
        if spec:
            faults = _apply(faults, spec)
    return faults


def _apply(faults: Faults, spec: str) -> Faults:
    key, sep, value = spec.partition("=")
    if not sep and key in FLAGS:
        return replace(
            faults,
            corrupt_on_wake=faults.corrupt_on_wake or key == "corrupt-on-wake",
            ignore_sigterm=faults.ignore_sigterm or key == "ignore-sigterm",
            crash_on_sleep_with_inflight=faults.crash_on_sleep_with_inflight
            or key == "crash-on-sleep-with-inflight",
        )
    if sep and key == "sleep":
        return replace(faults, sleep=_choice(key, value, SLEEP_MODES))
    if sep and key == "wake":
        return replace(faults, wake=_choice(key, value, WAKE_MODES))
    if sep and key == "health":
        return replace(faults, health=_choice(key, value, HEALTH_MODES))
    if sep and key == "crash":
        return replace(faults, crash=faults.crash | {_choice(key, value, CRASH_STEPS)})
    if sep and key == "decode":
        return replace(faults, decode_stall=bool(_choice(key, value, frozenset({"stall"}))))
    if sep and key == "wake-fail-after":
        return replace(faults, wake_fail_after=int(_number(key, value, integer=True)))
    if sep and key == "start-delay":
        return replace(faults, start_delay=_number(key, value, integer=False))
    raise FaultSpecError(f"unknown fault {spec!r}; known: {FAULT_HELP}")


def split_fault_env(value: str) -> list[str]:
    """Faults given through LLMUX_SIM_FAULT: separated by commas or whitespace."""
    return [part for part in value.replace(",", " ").split() if part]
