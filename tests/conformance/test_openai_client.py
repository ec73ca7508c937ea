"""The official openai package reads every answer of both engines, directly and through
llmux's gateway: chat, completions, a stream with usage, responses, embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conformance.client import TIMEOUT
from tests.conformance.stack import CHAT, EMBED, Target

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@contextmanager
def sdk(target: Target, model: str) -> Iterator[openai.OpenAI]:
    """An openai client for `model`'s endpoint (an engine's Unix socket, or llmux)."""
    endpoint = target.endpoints[model]
    if endpoint.uds is not None:
        http = httpx2.Client(transport=httpx2.HTTPTransport(uds=endpoint.uds), timeout=TIMEOUT)
        base_url = "http://localhost/v1"
    else:
        http = httpx2.Client(timeout=TIMEOUT)
        base_url = f"http://127.0.0.1:{endpoint.port}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, http_client=http)
    try:
        yield client
    finally:
        client.close()


def test_the_openai_package_reads_every_answer(target: Target) -> None:
    with sdk(target, CHAT) as client:
        chat = client.chat.completions.create(
            model=CHAT,
            messages=MESSAGES,
            max_tokens=3,
            temperature=0,
        )
        said = chat.choices[0].message.content
        assert said and chat.usage is not None
        pieces, usage = [], None
        for chunk in client.chat.completions.create(
            model=CHAT,
            messages=MESSAGES,
            max_tokens=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            pieces += [chunk.choices[0].delta.content or ""] if chunk.choices else []
            usage = chunk.usage or usage
        assert "".join(pieces) == said
        assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens
        text = client.completions.create(model=CHAT, prompt="hello there", max_tokens=3)
        assert text.choices[0].text and text.usage is not None
        response = client.responses.create(
            model=CHAT, input="hello there", max_output_tokens=3, temperature=0
        )
        assert response.output_text == said
    with sdk(target, EMBED) as client:
        embedded = client.embeddings.create(model=EMBED, input=["hello", "there"])
        assert [len(item.embedding) > 0 for item in embedded.data] == [True, True]
