"""Gateway API keys against a running llmux, with the official openai client."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port


def config() -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0},
        "models": {
            "alpha": sim_model(free_port(), aliases=["first"]),
            "beta": sim_model(free_port()),
        },
    }


def new_key(server: Llmux, **options: Any) -> str:
    code = (
        "from models_app.services.api_keys import create_key; import datetime as d; "
        f"o = {options!r}; "
        "o['expires_at'] = d.datetime.now(d.UTC) + d.timedelta(seconds=o['expires_at']) "
        "if 'expires_at' in o else None; "
        "print('KEY=' + create_key('test', **o).plaintext)"
    )
    out = server.manage(code)
    return next(line[4:] for line in out.splitlines() if line.startswith("KEY="))


def client(server: Llmux, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)


def chat(api: openai.OpenAI, model: str) -> Any:
    return api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )


def error_of(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    body = caught.value.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}  # OpenAI's shape
    return caught.value


def test_keys_are_required_scoped_expired_and_rate_limited(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})
    assert error_of(lambda: chat(client(llmux, "no-key"), "alpha")).status_code == 401
    assert error_of(lambda: chat(client(llmux, "llmux-abcd-nope"), "alpha")).status_code == 401

    scoped = new_key(llmux, scopes=["alpha"])
    assert chat(client(llmux, scoped), "alpha").choices[0].message.content
    denied = error_of(lambda: chat(client(llmux, scoped), "beta"))
    assert denied.status_code == 403 and "beta" in denied.message

    expired = new_key(llmux, expires_at=-1)
    assert "expired" in error_of(lambda: chat(client(llmux, expired), "alpha")).message

    limited = new_key(llmux, rpm_limit=2)
    for _ in range(2):
        chat(client(llmux, limited), "alpha")
    over = error_of(lambda: chat(client(llmux, limited), "alpha"))
    assert over.status_code == 429 and int(over.response.headers["retry-after"]) >= 1


def test_usage_counts_equal_the_sums_of_the_engines_usage(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})
    key = new_key(llmux)
    api = client(llmux, key)
    prompt = completion = 0
    for i, model in enumerate(["alpha", "first", "beta", "alpha"]):
        answer = api.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "count " * (i + 1)}],
            max_tokens=3 + i,
        )
        assert answer.usage is not None
        prompt += answer.usage.prompt_tokens
        completion += answer.usage.completion_tokens
    stream = api.chat.completions.create(
        model="beta",
        messages=[{"role": "user", "content": "stream it"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            prompt += chunk.usage.prompt_tokens
            completion += chunk.usage.completion_tokens
    assert key_counts(llmux, 5) == [5, prompt, completion]


def key_counts(server: Llmux, requests: int) -> list[int]:
    """[requests, prompt tokens, completion tokens] of the only key, once it has counted
    `requests` (the web process writes usage about once a second)."""
    deadline = time.monotonic() + 10
    while True:
        row: list[int] = json.loads(
            server.manage(
                "import json; from models_app.models import ApiKey; k = ApiKey.objects.get(); "
                "print(json.dumps([k.requests, k.prompt_tokens, k.completion_tokens]))"
            )
            .strip()
            .splitlines()[-1]
        )
        if row[0] >= requests or time.monotonic() > deadline:
            return row
        time.sleep(0.3)


def test_a_stream_is_counted_without_include_usage_and_the_client_sees_no_usage(
    llmux: Llmux,
) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})
    api = client(llmux, new_key(llmux))
    request: dict[str, Any] = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "stream without asking"}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
    }
    chunks = list(api.chat.completions.create(**request))
    assert chunks and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The usage event the gateway asked for on the client's behalf is not relayed.
    assert all(chunk.choices and chunk.usage is None for chunk in chunks), chunks[-1]
    requests, prompt, completion = key_counts(llmux, 1)
    assert requests == 1 and prompt > 0 and completion > 0

    asked = list(api.chat.completions.create(**request, stream_options={"include_usage": True}))
    usage = asked[-1].usage
    assert usage is not None and asked[-1].choices == []  # a client that asks still sees it
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert key_counts(llmux, 2) == [2, 2 * prompt, 2 * completion]


def test_on_loopback_keys_are_not_required_by_default(llmux: Llmux) -> None:
    llmux.start(config())
    assert chat(client(llmux, "anything"), "alpha").choices[0].message.content


def get(server: Llmux, path: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    """A GET on the gateway with an optional key: (status, JSON answer)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_with_keys_required_no_model_is_named_without_a_key(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})

    answers = {
        "list": get(llmux, "/v1/models"),
        "known": get(llmux, "/v1/models/alpha"),
        "unknown": get(llmux, "/v1/models/nope"),
        "bad key": get(llmux, "/v1/models/nope", key="llmux-abcd-nope"),
    }
    unknown_post = error_of(lambda: chat(client(llmux, "no-key"), "nope"))

    for what, (status, answer) in answers.items():
        assert status == 401, (what, answer)
        assert answer["error"]["type"] == "AuthenticationError", what
    assert unknown_post.status_code == 401  # not 404: the name is not confirmed either way


def test_a_scoped_key_sees_only_its_models(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})
    scoped = new_key(llmux, scopes=["first"])  # alpha's alias
    everything = new_key(llmux)

    listed = get(llmux, "/v1/models", key=scoped)
    all_listed = get(llmux, "/v1/models", key=everything)
    own = get(llmux, "/v1/models/alpha", key=scoped)
    other = get(llmux, "/v1/models/beta", key=scoped)
    unknown = get(llmux, "/v1/models/nope", key=scoped)

    assert listed[0] == 200 and [m["id"] for m in listed[1]["data"]] == ["alpha"]
    assert sorted(m["id"] for m in all_listed[1]["data"]) == ["alpha", "beta"]
    assert own[0] == 200 and own[1]["id"] == "alpha"
    # Outside the key's scope, known or not, is the same 403 as a POST for it gets.
    assert (other[0], unknown[0]) == (403, 403)
    assert other[1]["error"]["type"] == unknown[1]["error"]["type"] == "PermissionDeniedError"
    assert error_of(lambda: chat(client(llmux, scoped), "nope")).status_code == 403
    assert chat(client(llmux, scoped), "alpha").choices[0].message.content  # by its name too
    assert get(llmux, "/v1/models/nope", key=everything)[0] == 404
