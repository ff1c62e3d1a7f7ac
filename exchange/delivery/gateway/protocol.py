"""The OpenAI chat protocol as the gateway speaks it: request checks, error bodies, server-sent
events. Pure (standard library only; the import-linter contract of ``metering`` covers it too).

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (plus
``details`` with numbers where there are some), and OpenAI's status codes, so the official client
raises the matching exception (``NotFoundError`` for 404, ``RateLimitError`` for 429, …).
"""

from __future__ import annotations

from typing import Any, NamedTuple

ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
SORTS = frozenset(("price", "latency", "throughput"))
PROVIDER_FIELDS = frozenset(("order", "only", "ignore", "allow_fallbacks", "sort"))
# A request's completion cap: far above any model's output window, low enough that a typo
# (an extra zero or three) is refused rather than reserving a buyer's whole allocation.
MAX_COMPLETION_TOKENS = 1_000_000

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}


class GatewayError(Exception):
    """A refusal with an HTTP status and an OpenAI-shaped body. Raised before anything is
    forwarded or reserved, or after an attempt was released: it never costs the buyer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.details = details or {}
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": _TYPES.get(self.status, "invalid_request_error"),
            "param": self.param,
            "code": self.code,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, self.retry_after)).encode()))
        if self.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        return headers


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> Any:
    return GatewayError(400, code, message, param=param)


class ProviderPreferences(NamedTuple):
    """The optional ``provider`` object (as OpenRouter's): names or ids of providers."""

    order: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    sort: str | None = None  # price, latency, throughput; None: the lot expiring first


class ChatRequest(NamedTuple):
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None  # the completion cap the buyer gave (max_completion_tokens wins)
    provider: ProviderPreferences
    body: dict[str, Any]  # everything else, forwarded as given


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(item, str | int) and not isinstance(item, bool) for item in value
    ):
        raise bad_request(
            f"provider.{field} must be a list of provider names or ids.", param=f"provider.{field}"
        )
    return tuple(str(item).strip().lower() for item in value)


def _preferences(value: Any) -> ProviderPreferences:
    if value is None:
        return ProviderPreferences()
    if not isinstance(value, dict):
        raise bad_request("provider must be an object.", param="provider")
    unknown = set(value) - PROVIDER_FIELDS
    if unknown:
        raise bad_request(
            f"Unsupported provider field(s): {', '.join(sorted(unknown))}. "
            f"Supported: {', '.join(sorted(PROVIDER_FIELDS))}.",
            param="provider",
        )
    allow = value.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise bad_request(
            "provider.allow_fallbacks must be true or false.", param="provider.allow_fallbacks"
        )
    sort = value.get("sort")
    if sort is not None and sort not in SORTS:
        raise bad_request(
            "provider.sort must be one of price, latency, throughput.", param="provider.sort"
        )
    return ProviderPreferences(
        order=_names(value.get("order"), "order"),
        only=_names(value.get("only"), "only"),
        ignore=_names(value.get("ignore"), "ignore"),
        allow_fallbacks=allow,
        sort=sort,
    )


def _cap(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"{field} must be a positive integer.", param=field)
    if value > MAX_COMPLETION_TOKENS:
        raise bad_request(f"{field} must be at most {MAX_COMPLETION_TOKENS}.", param=field)
    return value


def chat_request_parse(body: Any) -> ChatRequest:
    """Check a ``POST /v1/chat/completions`` body; raises ``GatewayError`` (400) naming the
    parameter. Checks what the gateway relies on; the rest is the upstream's to judge."""
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("model is required.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list.", param="messages")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(
                f"messages[{position}] must be an object with a role ({', '.join(sorted(ROLES))}).",
                param=f"messages[{position}]",
            )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("stream must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object.", param="stream_options")
    if options is not None and not stream:
        raise bad_request("stream_options is only allowed with stream: true.", param="stream")
    n = body.get("n")
    if n is not None and n != 1:
        # one reservation per choice would be needed; agents send separate requests instead
        raise bad_request("Only n = 1 is supported; send separate requests.", param="n")
    max_tokens = _cap(body, "max_completion_tokens") or _cap(body, "max_tokens")
    provider = _preferences(body.get("provider"))
    rest = {key: value for key, value in body.items() if key != "provider"}
    return ChatRequest(
        model=model.strip(),
        messages=messages,
        stream=stream,
        max_tokens=max_tokens,
        provider=provider,
        body=rest,
    )


def upstream_body(
    request: ChatRequest, *, upstream_model: str, default_max_tokens: int
) -> dict[str, Any]:
    """The body sent to the provider: its own model id, usage asked for on a stream, and the
    completion cap that was reserved (so a provider cannot deliver more than was reserved)."""
    body = dict(request.body)
    body["model"] = upstream_model
    if request.max_tokens is None:
        body["max_tokens"] = default_max_tokens
    if request.stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return body


class SseEvents:
    """Server-sent events from the bytes of a stream as they arrive: ``feed`` returns the
    ``data`` of every event completed by those bytes (its data lines joined by a line feed),
    as bytes, undecoded (JSON parses bytes). Comments and the other fields (``event:``,
    ``id:``, ``retry:``) are ignored; lines may end with CRLF, LF or CR, as the format allows.

    Working on the bytes, not on decoded lines, is the gateway's streaming fast path: most
    reads complete one event or a few, each ``data: {...}`` alone on its line."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # a CR at the very end may be the first half of a CRLF split across two reads
            held = b"\r" if buffer.endswith(b"\r") else b""
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 2 :]
        events = []
        for block in buffer[:end].split(b"\n\n"):
            data = _event_data(block)
            if data is not None:
                events.append(data)
        return events

    def end(self) -> bytes | None:
        """The last event when the stream ended without its blank line."""
        buffer, self._buffer = self._buffer.rstrip(b"\r"), b""
        return _event_data(buffer) if buffer else None


def _event_data(block: bytes) -> bytes | None:
    if block.startswith(b"data:") and b"\n" not in block:  # the usual event: one data line
        value = block[5:]
        return value[1:] if value.startswith(b" ") else value
    data = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in block.split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(data) if data else None
