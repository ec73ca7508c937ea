"""Read-side queries shared by pages and the API (no writes here)."""

from __future__ import annotations

from dataclasses import dataclass

from models_app.models import EngineState, ModelDefinition, RegistryConfig


@dataclass(frozen=True)
class RegistryRow:
    model: ModelDefinition
    aliases: list[str]
    address: str
    eviction: str
    state: str
    state_label: str


def registry_rows(config: RegistryConfig) -> list[RegistryRow]:
    """One row per model, with its runtime state (not_started when it never ran)."""
    default = config.default_eviction()
    rows = []
    models = ModelDefinition.objects.prefetch_related("aliases").select_related("runtime")
    for model in models:
        runtime = getattr(model, "runtime", None)
        state = EngineState(runtime.state) if runtime else EngineState.NOT_STARTED
        eviction = model.eviction_override() or default
        rows.append(
            RegistryRow(
                model=model,
                aliases=[a.name for a in model.aliases.all()],
                address=f"unix:{model.uds_path}"
                if model.uds_path
                else f"{model.host}:{model.port}",
                eviction=eviction.label,
                state=state.value,
                state_label=state.label,
            )
        )
    return rows
