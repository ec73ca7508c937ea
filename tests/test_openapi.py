"""The gateway's endpoints are documented in the OpenAPI schema, served with local assets."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_schema_documents_the_gateway_with_openai_error_shapes(admin_client: Client) -> None:
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        assert path in schema["paths"], path
    # vLLM's tokenizer routes, forwarded at the root where vLLM serves them
    for path, operation in (
        ("/tokenize", "gateway_tokenize"),
        ("/detokenize", "gateway_detokenize"),
    ):
        assert schema["paths"][path]["post"]["operationId"] == operation
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    statuses = {"400", "401", "403", "404", "408", "413", "415", "429", "431", "502", "503"}
    assert set(chat["responses"]) == {"200", "504", *statuses}
    error = schema["components"]["schemas"]["OpenAIError"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]


def test_the_interactive_docs_use_no_asset_from_the_internet(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "https://" not in page


def test_the_schema_needs_a_login(client: Client) -> None:
    assert client.get("/api/schema/").status_code in (401, 403)
