"""The model registry's writers and its export: a whole config file applied (`llmux_import`),
one model created, changed or deleted (the REST API, the dashboard), the tables exported.

Modules: `importer` (a whole file), `model_edits` (one model), `exporter` (tables to spec),
`plans` and `problems` (what a write changes, what is wrong with it, shared by both
writers), `columns` (config keys to columns), `report` (what a write did).
"""

from models_app.services.registry.exporter import export_registry, model_entry, settings_spec
from models_app.services.registry.importer import apply_registry
from models_app.services.registry.model_edits import delete_model, save_model
from models_app.services.registry.report import FieldChange, ImportReport, ModelOutcome

__all__ = [
    "FieldChange",
    "ImportReport",
    "ModelOutcome",
    "apply_registry",
    "delete_model",
    "export_registry",
    "model_entry",
    "save_model",
    "settings_spec",
]
