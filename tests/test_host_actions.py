"""The worker uses CUDA suspend only where it was asked for or a driver binding is there,
and CRIU only where the registry's criu_path is a program here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from checkpoints_app.services.store import DbImageStore
from llmux_site.core import processes
from llmux_site.core.criu import Criu
from llmux_site.core.cuda_helper import HelperProcess
from llmux_site.core.process_actions import HostProcessActions
from models_app import wiring
from models_app.models import RegistryConfig

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    wiring.worker_process_actions.cache_clear()
    yield
    wiring.worker_process_actions.cache_clear()


def test_off_means_no_process_actions() -> None:
    with override_settings(LLMUX_CUDA_SUSPEND="off", LLMUX_CUDA_CHECKPOINT_BIN="/x"):
        assert wiring.worker_process_actions() is None


def test_auto_without_cuda_bindings_or_a_binary_means_none() -> None:
    # This machine has no cuda-bindings (GPU hosts install the `cuda` extra).
    with override_settings(LLMUX_CUDA_SUSPEND="auto", LLMUX_CUDA_CHECKPOINT_BIN=None):
        assert wiring.worker_process_actions() is None


def test_a_cuda_checkpoint_binary_is_used_through_the_helper() -> None:
    with override_settings(LLMUX_CUDA_SUSPEND="auto", LLMUX_CUDA_CHECKPOINT_BIN="/opt/cc"):
        actions = wiring.worker_process_actions()
    assert isinstance(actions, HostProcessActions)
    helper = actions.suspend_helper
    assert isinstance(helper, HelperProcess) and helper.binary == "/opt/cc"


def test_criu_is_used_where_its_path_is_a_program(criu: Criu) -> None:
    RegistryConfig.objects.update_or_create(
        pk=1, defaults={"criu_path": criu.binary, "cuda_plugin_dir": "/opt/criu-plugins"}
    )
    try:
        with override_settings(LLMUX_CUDA_SUSPEND="off", LLMUX_CRIU="auto"):
            actions = wiring.worker_process_actions()
    finally:
        processes.set_child_subreaper(False)  # worker_process_actions made this process one
    assert isinstance(actions, HostProcessActions) and actions.suspend_helper is None
    assert isinstance(actions.criu, Criu) and actions.criu.binary == criu.binary
    assert actions.criu.plugin_dir == "/opt/criu-plugins"
    assert isinstance(actions.images, DbImageStore)


def test_criu_off_or_missing_means_no_checkpoints(criu: Criu) -> None:
    RegistryConfig.objects.update_or_create(pk=1, defaults={"criu_path": criu.binary})
    with override_settings(LLMUX_CUDA_SUSPEND="off", LLMUX_CRIU="off"):
        assert wiring.worker_process_actions() is None
    wiring.worker_process_actions.cache_clear()
    RegistryConfig.objects.filter(pk=1).update(criu_path="/nonexistent/criu")
    with override_settings(LLMUX_CUDA_SUSPEND="off", LLMUX_CRIU="auto"):
        assert wiring.worker_process_actions() is None
