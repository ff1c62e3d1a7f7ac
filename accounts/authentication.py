"""``Authorization: Bearer <key>`` for bots, and the scope permission every API view uses."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.models import ApiKey
from accounts.services import api_key_authenticate


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            key = header[1].decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed("Malformed API key.") from error
        api_key = api_key_authenticate(key=key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def request_scopes(request: Request) -> frozenset[str] | None:
    """The scopes of the API key used, or None for a browser session (all of its user's)."""
    if isinstance(request.auth, ApiKey):
        return frozenset(request.auth.scopes)
    return None


class HasScope(BasePermission):
    """Requires an authenticated user; with an API key, also the view's ``required_scope``."""

    message = "This API key lacks the required scope."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        scopes = request_scopes(request)
        required = getattr(view, "required_scopes", {}).get(request.method) or getattr(
            view, "required_scope", "read"
        )
        if scopes is not None and required not in scopes:
            self.message = f"This API key lacks the {required!r} scope."
            return False
        return True
