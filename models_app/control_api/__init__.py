"""llmux's control API (`/control/*`, llmux 0.5 and its later eviction form), with
llmux's request and response JSON, on the same operator actions as the REST API."""
