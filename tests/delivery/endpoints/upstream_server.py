"""A real OpenAI-compatible HTTP server on a loopback port, with scripted behaviour.

``GET /v1/models`` and streamed ``POST /v1/chat/completions`` (SSE, usage in the last chunk),
Bearer key checked; the test changes ``behaviour`` while it runs and ``stop()`` makes it stop
answering (connection refused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM_KEY = "sk-upstream-secret-7f3a9c"


@dataclass
class Behaviour:
    api_key: str = UPSTREAM_KEY
    models: list[str] = field(default_factory=lambda: ["qwen3.6-plus", "other-model"])
    fail: bool = False  # chat completions answer HTTP 500
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    tokens: int = 4
    usage: bool = True
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, authorization


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        self.server.behaviour.seen.append((self.command, self.path, auth))
        if auth != f"Bearer {self.server.behaviour.api_key}":
            self._json(401, {"error": {"message": "bad key", "type": "auth", "code": "401"}})
            return False
        return True

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path != "/v1/models":
            self._json(404, {"error": {"message": "no"}})
            return
        models = [
            {"id": m, "object": "model", "owned_by": "test"} for m in self.server.behaviour.models
        ]
        self._json(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self._authorized():
            return
        behaviour = self.server.behaviour
        if self.path != "/v1/chat/completions" or behaviour.fail:
            self._json(500, {"error": {"message": "upstream failure"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(behaviour.first_token_delay)
        for number in range(behaviour.tokens):
            if number:
                time.sleep(behaviour.token_delay)
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        if behaviour.usage:
            usage = {
                "prompt_tokens": 9,
                "completion_tokens": behaviour.tokens,
                "total_tokens": 9 + behaviour.tokens,
            }
            last = {"id": "chatcmpl-test", "choices": [], "usage": usage}
            self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


@dataclass
class Upstream:
    base_url: str
    behaviour: Behaviour
    _server: _Server

    def stop(self) -> None:
        """Stop answering: the port is closed (connection refused from now on)."""
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def upstream_server(behaviour: Behaviour | None = None) -> Iterator[Upstream]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.behaviour = behaviour or Behaviour()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    upstream = Upstream(f"http://127.0.0.1:{server.server_address[1]}/v1", server.behaviour, server)
    try:
        yield upstream
    finally:
        if thread.is_alive():
            server.shutdown()
            server.server_close()
