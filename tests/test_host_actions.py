"""The worker uses CUDA suspend only where it was asked for or a driver binding is there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from llmux_site.core.cuda_helper import HelperProcess
from llmux_site.core.process_actions import HostProcessActions
from models_app.services import host_actions


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    host_actions.process_actions.cache_clear()
    yield
    host_actions.process_actions.cache_clear()


def test_off_means_no_process_actions() -> None:
    with override_settings(LLMUX_CUDA_SUSPEND="off", LLMUX_CUDA_CHECKPOINT_BIN="/x"):
        assert host_actions.process_actions() is None


def test_auto_without_cuda_bindings_or_a_binary_means_none() -> None:
    # This machine has no cuda-bindings (GPU hosts install the `cuda` extra).
    with override_settings(LLMUX_CUDA_SUSPEND="auto", LLMUX_CUDA_CHECKPOINT_BIN=None):
        assert host_actions.process_actions() is None


def test_a_cuda_checkpoint_binary_is_used_through_the_helper() -> None:
    with override_settings(LLMUX_CUDA_SUSPEND="auto", LLMUX_CUDA_CHECKPOINT_BIN="/opt/cc"):
        actions = host_actions.process_actions()
    assert isinstance(actions, HostProcessActions)
    helper = actions.suspend_helper
    assert isinstance(helper, HelperProcess) and helper.binary == "/opt/cc"
