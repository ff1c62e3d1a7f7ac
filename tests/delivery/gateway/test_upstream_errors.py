"""An upstream's refusal reaches the buyer only as its error code and param, checked."""

from __future__ import annotations

import orjson

from exchange.delivery.gateway.proxy import _upstream_error_fields

KEY = "sk-provider-secret-123456"


def _body(**error: object) -> bytes:
    return orjson.dumps({"error": {"message": f"bad request, key {KEY}", **error}})


def test_identifiers_pass_and_the_message_never_does():
    assert _upstream_error_fields(
        _body(code="context_length_exceeded", param="messages[0].content"), KEY
    ) == ("context_length_exceeded", "messages[0].content")


def test_a_code_or_param_carrying_the_key_or_free_text_is_dropped():
    assert _upstream_error_fields(_body(code=KEY, param=f"auth {KEY}"), KEY) == (None, None)
    assert _upstream_error_fields(_body(code="sk-provider", param="x" * 65), KEY) == (None, None)
    assert _upstream_error_fields(b"<html>502</html>", KEY) == (None, None)
    assert _upstream_error_fields(b'{"error": "just text"}', KEY) == (None, None)
