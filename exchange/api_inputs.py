"""Strict API input: what a client sends is either understood in full or refused.

A bot that misspells a field (``timeInForce`` for ``time_in_force``) must not get an order it
did not ask for (a resting GTC order instead of an IOC one), so an unknown field in a JSON body
is a 400 ``invalid`` naming the field, never ignored. Every request-body serializer of the API
is a ``StrictSerializer`` (``tests/test_api_contract.py`` checks the document for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

UNKNOWN_FIELD = "Unknown field."


def unknown_fields(data: Any, known: set[str] | frozenset[str]) -> dict[str, list[str]]:
    """field → [message] for every key of ``data`` (a JSON object) that is not ``known``."""
    if not isinstance(data, Mapping):
        return {}
    return {str(name): [UNKNOWN_FIELD] for name in data if name not in known}


class StrictSerializer(serializers.Serializer):
    """An unknown field is refused: 400 invalid, its name in details."""

    def to_internal_value(self, data: Any) -> Any:
        known = {name for name, field in self.fields.items() if not field.read_only}
        unknown = unknown_fields(data, known)
        if unknown:
            raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)
