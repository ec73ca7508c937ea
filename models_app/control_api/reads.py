"""What the control API reads: engines with their policies, a model's existence, the
registry's request timeout. Reads only (nothing is inserted on these paths)."""

from __future__ import annotations

from models_app.control_api.shapes import EngineRow, ModelRow
from models_app.models import EngineRuntime, EngineState, ModelDefinition, RegistryConfig
from models_app.services.engines import eviction_policy
from models_app.services.runtime import evicted_policy, override_policy


def _engine(runtime: EngineRuntime | None) -> EngineRow:
    if runtime is None:
        return EngineRow(EngineState.NOT_STARTED.value, None, "")
    return EngineRow(runtime.state, evicted_policy(runtime), runtime.last_error)


def engine_rows() -> dict[str, ModelRow]:
    """Every model: its engine, and the policy it is evicted by now (its runtime override,
    else its own, else the registry's)."""
    config = RegistryConfig.current()
    rows = {}
    for model in ModelDefinition.objects.select_related("runtime").order_by("name"):
        runtime: EngineRuntime | None = getattr(model, "runtime", None)
        override = override_policy(runtime) if runtime else None
        rows[model.name] = ModelRow(_engine(runtime), override or eviction_policy(model, config))
    return rows


def known_model(name: str) -> bool:
    return ModelDefinition.objects.filter(name=name).exists()


def request_timeout() -> float:
    return float(RegistryConfig.current().request_timeout_secs)
