"""vLLM's tokenizer routes, /tokenize and /detokenize (at the root, on every runner).

The simulated tokenizer has one token per whitespace-separated word (textgen), so a
prompt's /tokenize count is the `prompt_tokens` a completion of it is charged, and a chat's
is its chat completion's, as with vLLM.
"""

from __future__ import annotations

from aiohttp import web

from llmux_site.simulator import fields, textgen
from llmux_site.simulator.api_control import engine_of
from llmux_site.simulator.api_openai import chat_messages, resolve_model
from llmux_site.simulator.errors import validation_error

routes = web.RouteTableDef()


@routes.post("/tokenize")
async def tokenize(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = await fields.openai_body(request)
    if body.get("messages") is not None:
        ids = textgen.chat_token_ids(chat_messages(body))
    elif body.get("prompt") is not None:
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise validation_error(
                "prompt", "string_type", "Input should be a valid string", prompt
            )
        ids = textgen.token_ids(prompt)
    else:
        raise validation_error("prompt", "missing", "Field required", body)
    strs = textgen.token_strs(ids) if fields.boolean(body, "return_token_strs") else None
    resolve_model(engine, body)
    limit = engine.config.max_model_len
    return web.json_response(
        {"count": len(ids), "max_model_len": limit, "tokens": ids, "token_strs": strs}
    )


@routes.post("/detokenize")
async def detokenize(request: web.Request) -> web.Response:
    engine = engine_of(request)
    body = await fields.openai_body(request)
    tokens = fields.listed(body, "tokens")
    for index, token in enumerate(tokens):
        if not isinstance(token, int) or isinstance(token, bool):
            raise validation_error(
                f"tokens.{index}", "int_type", "Input should be a valid integer", token
            )
    resolve_model(engine, body)
    return web.json_response({"prompt": textgen.detokenize(tokens)})
