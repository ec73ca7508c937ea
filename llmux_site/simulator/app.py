"""The aiohttp application of one simulated engine: routes plus vLLM-shaped errors."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from llmux_site.simulator import api_control, api_openai, api_pooling, api_responses, api_tokens
from llmux_site.simulator.api_control import ENGINE
from llmux_site.simulator.engine import Engine
from llmux_site.simulator.errors import ApiError


@web.middleware
async def count_and_shape_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by path (for /sim/state) and answer errors as vLLM does."""
    counts = request.app[ENGINE].request_counts
    counts[request.path] = counts.get(request.path, 0) + 1
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # vLLM's web framework (FastAPI) answers an unknown path (404) or method (405)
        # with its own `{"detail": ...}`, not OpenAI's error shape.
        return web.json_response({"detail": exc.reason}, status=exc.status)


def build_app(engine: Engine) -> web.Application:
    """One engine's application; the caller owns the engine's lifetime."""
    app = web.Application(middlewares=[count_and_shape_errors], client_max_size=64 * 1024 * 1024)
    app[ENGINE] = engine
    for module in (api_control, api_openai, api_pooling, api_responses, api_tokens):
        app.add_routes(module.routes)
    return app
