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
NOT_TEXT = "Not a valid string."


def unknown_fields(data: Any, known: set[str] | frozenset[str]) -> dict[str, list[str]]:
    """field → [message] for every key of ``data`` (a JSON object) that is not ``known``."""
    if not isinstance(data, Mapping):
        return {}
    return {str(name): [UNKNOWN_FIELD] for name in data if name not in known}


def _wrong_types(fields: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, list[str]]:
    """field → [message] for text fields sent as something else: DRF's ``CharField`` turns
    ``0`` into ``"0"``, so a number where the document says string was accepted."""
    return {
        name: [NOT_TEXT]
        for name, field in fields.items()
        if not field.read_only and data.get(name) is not None and _not_text(field, data[name])
    }


def _not_text(field: Any, value: Any) -> bool:
    if isinstance(field, serializers.CharField):
        return not isinstance(value, str)
    if isinstance(field, serializers.ListField) and isinstance(field.child, serializers.CharField):
        return isinstance(value, list) and any(not isinstance(item, str) for item in value)
    return False


class StrictSerializer(serializers.Serializer):
    """An unknown field is refused: 400 invalid, its name in details; so is a number or a
    boolean where text is expected."""

    def to_internal_value(self, data: Any) -> Any:
        known = {name for name, field in self.fields.items() if not field.read_only}
        unknown = unknown_fields(data, known)
        if unknown:
            raise serializers.ValidationError(unknown)
        if isinstance(data, Mapping):
            wrong = _wrong_types(self.fields, data)
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)
