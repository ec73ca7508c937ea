"""Shared fixtures. Plugins live in tests/plugins so each concern stays small."""

pytest_plugins = [
    "tests.plugins.process_guard",
    "tests.plugins.engines",
    "tests.plugins.criu",
    "tests.plugins.parallel",  # how `make test` splits the suite over two xdist workers
    "tests.plugins.real_vllm",  # `real_vllm`: vLLM's CPU build and two tiny local models
    "tests.integration.cluster",  # the `cluster` fixture: daphne and a worker, separately
]
