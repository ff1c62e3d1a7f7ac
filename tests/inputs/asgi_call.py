"""One HTTP request through an ASGI app, as uvicorn would send it (query string included)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync


def asgi_call(
    app: Any,
    method: str,
    path: str,
    *,
    raw: bytes = b"",
    query: bytes = b"",
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    sent_headers = {
        "host": "localhost",
        "content-type": "application/json",
        "content-length": str(len(raw)),
        "x-forwarded-proto": "https",
        **({"authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in sent_headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(app)(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    is_json = response_headers.get("content-type", "").startswith("application/json")
    return start["status"], response_headers, json.loads(body) if is_json and body else body
