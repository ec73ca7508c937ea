"""`Authorization: Token KEY` against the project's hashed tokens (models_app.ApiToken).

The header is DRF's TokenAuthentication's, so automation written for it keeps working;
only the lookup differs: by prefix and SHA-256, never a token stored in clear.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from models_app.services import api_tokens


class HashedTokenAuthentication(TokenAuthentication):
    """DRF's header parsing, the project's token check."""

    def authenticate_credentials(self, key: str) -> tuple[Any, None]:
        user = api_tokens.user_for(key)
        if user is None:
            raise AuthenticationFailed("invalid token")
        return user, None
