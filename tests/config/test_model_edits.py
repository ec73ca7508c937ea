"""One model created, changed or deleted (the API's and the dashboard's definition writes):
validated exactly as an import of it is, and nothing but that model written."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from llmux_site.core.config import ConfigError, parse_config
from models_app.models import EngineRuntime, ModelAlias, ModelDefinition, RegistryConfig
from models_app.services.acting import Acting
from models_app.services.definition_actions import do_edit_model
from models_app.services.registry import apply_registry, delete_model, model_entry, save_model

pytestmark = pytest.mark.django_db

ALPHA = {"engine": "simulator", "model_path": "sim/alpha", "port": 18001}
BETA = {"engine": "simulator", "model_path": "sim/beta", "port": 18002, "aliases": ["b"]}


@pytest.fixture
def registry() -> None:
    apply_registry(parse_config({"models": {"alpha": ALPHA, "beta": BETA}}))


def errors_of(write: Any) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        write()
    return [str(error) for error in refused.value.errors]


def test_an_edit_writes_that_model_and_nothing_else(registry: None) -> None:
    beta = ModelDefinition.objects.get(name="beta")
    settings = RegistryConfig.objects.get()
    outcome = save_model("alpha", {**ALPHA, "description": "tuned"}, restricted=False)
    assert (outcome.action, [change.key for change in outcome.changes]) == (
        "updated",
        ["description"],
    )
    assert ModelDefinition.objects.get(name="alpha").description == "tuned"
    assert ModelDefinition.objects.get(name="beta").updated_at == beta.updated_at
    assert RegistryConfig.objects.get().updated_at == settings.updated_at


def test_an_edit_that_changes_nothing_says_so(registry: None) -> None:
    assert save_model("alpha", ALPHA, restricted=True).action == "unchanged"


def test_a_new_model_with_its_aliases(registry: None) -> None:
    outcome = save_model("gamma", {**ALPHA, "port": 18003, "aliases": ["g"]}, restricted=False)
    assert outcome.action == "created"
    assert ModelAlias.objects.get(name="g").model.name == "gamma"


@pytest.mark.parametrize(
    "entry",
    [
        {"model_path": "sim/alpha", "port": "eighty"},
        {"port": 18001},
        {**ALPHA, "extra_args": ["--x; rm -rf /"]},
        {**ALPHA, "description": "x" * 501},
        {**ALPHA, "engine": "warp"},
    ],
)
def test_an_edit_is_refused_what_an_import_of_the_model_is_refused(
    registry: None, entry: dict[str, Any]
) -> None:
    as_import = errors_of(lambda: apply_registry(parse_config({"models": {"alpha": entry}})))
    assert errors_of(lambda: save_model("alpha", entry, restricted=False)) == as_import
    assert ModelDefinition.objects.get(name="alpha").model_path == "sim/alpha"


def test_a_path_outside_the_roots_is_refused_as_on_import(registry: None) -> None:
    entry = {**ALPHA, "checkpoint_path": "/etc/llmux"}
    with override_settings(LLMUX_PATH_ROOTS=["/models"]):
        as_import = errors_of(lambda: apply_registry(parse_config({"models": {"alpha": entry}})))
        assert errors_of(lambda: save_model("alpha", entry, restricted=False)) == as_import
    assert as_import and all("checkpoint_path" in error for error in as_import)


def test_a_port_or_alias_of_another_model_is_refused_naming_it(registry: None) -> None:
    taken = {**ALPHA, "port": 18002, "aliases": ["b"]}
    assert errors_of(lambda: save_model("alpha", taken, restricted=False)) == [
        "models.alpha.aliases[0]: 'b' is already an alias of model beta",
        "models.alpha.port: 18002 is already used by model beta",
    ]


def test_a_port_of_llmux_itself_is_refused(registry: None) -> None:
    document = {"models": {}, "port": 18009}
    apply_registry(parse_config(document))
    errors = errors_of(lambda: save_model("gamma", {**ALPHA, "port": 18009}, restricted=False))
    assert errors == ["models.gamma.port: 18009 is already used by the top-level port"]


def test_an_operator_may_not_add_what_only_an_administrator_sets(registry: None) -> None:
    command = {**ALPHA, "engine": "generic", "command": ["/bin/sh", "-c", "id"]}
    errors = errors_of(lambda: save_model("alpha", command, restricted=True))
    assert errors and all("only an administrator" in error for error in errors)
    assert save_model("alpha", command, restricted=False).action == "updated"


# --- keys llmux ignores: an import keeps them, an edit adds none ----------------------------


def test_an_edit_keeps_the_unknown_keys_an_import_kept(registry: None) -> None:
    apply_registry(parse_config({"models": {"alpha": {**ALPHA, "gpu_memory": 0.8}}}))
    entry = model_entry(ModelDefinition.objects.get(name="alpha"))
    assert entry["gpu_memory"] == 0.8

    outcome = save_model("alpha", {**entry, "description": "tuned"}, restricted=True)

    assert [change.key for change in outcome.changes] == ["description"]
    assert ModelDefinition.objects.get(name="alpha").unknown_keys == {"gpu_memory": 0.8}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"prioirty": 5}, "models.alpha.prioirty: unknown field"),
        ({"sleep_level": 0}, "models.alpha.sleep_level: 0 is not one of llmux's levels 1-5"),
    ],
)
def test_an_edit_is_refused_what_only_a_strict_import_refuses(
    registry: None, change: dict[str, Any], error: str
) -> None:
    errors = errors_of(lambda: save_model("alpha", {**ALPHA, **change}, restricted=False))

    assert len(errors) == 1 and errors[0].startswith(error)
    assert ModelDefinition.objects.get(name="alpha").unknown_keys == {}


@pytest.mark.parametrize(
    "change",
    [{"sleep_level": 2}, {"eviction": {"weights": "discard", "process": "keep_running"}}],
)
@pytest.mark.parametrize("file_form", ["sleep_level", "eviction"])
def test_a_merged_edit_changes_the_eviction_in_either_form(
    change: dict[str, Any], file_form: str
) -> None:
    # The entry it merges into is in the form of the imported file (config_compat).
    level_1 = {"weights": "offload", "process": "keep_running"}
    first = {"sleep_level": 1} if file_form == "sleep_level" else {"eviction": level_1}
    apply_registry(parse_config({"models": {"alpha": {**ALPHA, **first}}}))
    admin = User.objects.create_user("admin", is_superuser=True)

    do_edit_model("alpha", change, merge=True, acting=Acting(admin, "api"))

    alpha = ModelDefinition.objects.get(name="alpha")
    assert (alpha.eviction_weights, alpha.eviction_process) == ("discard", "keep_running")


def test_a_delete_takes_the_model_and_its_aliases(registry: None) -> None:
    delete_model("beta")
    assert list(ModelDefinition.objects.values_list("name", flat=True)) == ["alpha"]
    assert not ModelAlias.objects.exists()


def test_a_model_with_an_image_to_restore_is_not_deleted(registry: None) -> None:
    EngineRuntime.objects.create(
        model=ModelDefinition.objects.get(name="beta"), state="checkpointed"
    )
    assert errors_of(lambda: delete_model("beta")) == [
        "models.beta: cannot prune: its engine is checkpointed; stop it first"
    ]
    assert ModelDefinition.objects.filter(name="beta").exists()
