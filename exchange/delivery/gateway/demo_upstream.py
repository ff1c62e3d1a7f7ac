"""The demo upstream: an OpenAI-compatible chat server that streams deterministic, clearly
labelled demo text (not a language model) at a set speed, for the live demo, the tests and the
gateway benchmark.

A small ASGI app without Django. ``make run`` serves it in the exchange's own process under
``/demo-upstream`` (``DEMO_UPSTREAM``, on with ``DEMO``), so a demo provider's endpoint is
``http://127.0.0.1:8000/demo-upstream/v1``; on its own::

    python -m exchange.delivery.gateway.demo_upstream --port 8199   # http://127.0.0.1:8199/v1

Behaviour per base URL: ``{root}/v1`` uses the defaults (environment ``DEMO_UPSTREAM_TTFT_MS``,
``DEMO_UPSTREAM_TPS``, ``DEMO_UPSTREAM_FAILURE_RATE``, ``DEMO_UPSTREAM_USAGE``,
``DEMO_UPSTREAM_LENGTH``); ``{root}/p/{settings}/v1`` overrides them, ``settings`` being
comma-separated ``name=value`` pairs:

- ``ttft=250`` — milliseconds before the first token;
- ``tps=50`` — tokens per second after it;
- ``fail=0.25`` — share of requests answered ``503`` before any token, deterministically (the
  4th, 8th, … request of that base URL with 0.25);
- ``usage=0`` — never report usage (the gateway must estimate);
- ``len=48`` — tokens in a full answer (``max_tokens`` caps it: then ``finish_reason: length``);
- ``break=5`` — drop the connection after 5 tokens (a broken stream);
- ``status=429`` — the status of a failure.

``GET {base}/models`` lists ``exchange-demo``; any model id is accepted. Any bearer key is
accepted; none is refused (401). A token is one word of the demo text; reported usage counts
them, and the prompt as ``metering.estimate_prompt_tokens`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, NamedTuple

import orjson

from exchange.delivery.gateway.metering import estimate_prompt_tokens

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MODEL_ID = "exchange-demo"
DEMO_TEXT = (
    "[DEMO] This reply comes from the token exchange's demo upstream, not from a language "
    "model. It streams fixed words at a set speed so that metering, escrow and service "
    "levels can be watched at work. "
)
_WORDS = re.findall(r"\S+\s*", DEMO_TEXT)


def demo_tokens(count: int) -> list[str]:
    """The first ``count`` tokens of the demo text (repeated as often as needed)."""
    return list(itertools.islice(itertools.cycle(_WORDS), count))


class Behaviour(NamedTuple):
    first_token_ms: int = 200
    tokens_per_second: int = 60
    failure_rate: Fraction = Fraction(0)
    usage: bool = True
    length: int = 48
    break_after: int | None = None
    failure_status: int = 503


def _environment_defaults() -> Behaviour:
    return Behaviour(
        first_token_ms=int(os.environ.get("DEMO_UPSTREAM_TTFT_MS", "200")),
        tokens_per_second=int(os.environ.get("DEMO_UPSTREAM_TPS", "60")),
        failure_rate=Fraction(os.environ.get("DEMO_UPSTREAM_FAILURE_RATE", "0")),
        usage=os.environ.get("DEMO_UPSTREAM_USAGE", "1") not in ("0", "false", "no"),
        length=int(os.environ.get("DEMO_UPSTREAM_LENGTH", "48")),
    )


_FIELDS = {
    "ttft": ("first_token_ms", int),
    "tps": ("tokens_per_second", int),
    "fail": ("failure_rate", Fraction),
    "usage": ("usage", lambda value: value not in ("0", "false", "no")),
    "len": ("length", int),
    "break": ("break_after", int),
    "status": ("failure_status", int),
}


def behaviour_parse(text: str, defaults: Behaviour) -> Behaviour:
    """``ttft=250,tps=50`` over ``defaults``; ValueError on an unknown name or a bad value."""
    changes: dict[str, Any] = {}
    for pair in filter(None, text.split(",")):
        name, _, value = pair.partition("=")
        if name not in _FIELDS:
            raise ValueError(f"unknown demo setting {name!r}")
        field, parse = _FIELDS[name]
        changes[field] = parse(value)
    behaviour = defaults._replace(**changes)
    if behaviour.tokens_per_second <= 0 or behaviour.length < 0 or behaviour.first_token_ms < 0:
        raise ValueError("tps must be positive, len and ttft not negative")
    if not 0 <= behaviour.failure_rate <= 1:
        raise ValueError("fail must be between 0 and 1")
    return behaviour


class DemoUpstream:
    """The ASGI app. ``prefix`` is where it is mounted (``/demo-upstream`` in the exchange)."""

    def __init__(self, *, prefix: str = "", defaults: Behaviour | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.defaults = defaults or _environment_defaults()
        self._served: dict[str, int] = {}  # requests per behaviour, for the failure pattern
        self._completion_counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path = scope["path"][len(self.prefix) :] if self.prefix else scope["path"]
        settings_text = ""
        if path.startswith("/p/"):
            settings_text, _, rest = path[3:].partition("/")
            path = "/" + rest
        try:
            behaviour = behaviour_parse(settings_text, self.defaults)
        except (ValueError, ZeroDivisionError) as error:
            await _json(send, 404, _error(f"Bad demo settings: {error}.", "not_found"))
            return
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        if not authorization.lower().startswith(b"bearer ") or len(authorization) <= 7:
            await _json(send, 401, _error("Missing bearer key.", "invalid_api_key"))
            return
        if path == "/v1/models" and scope["method"] == "GET":
            data = [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "demo"}]
            await _json(send, 200, {"object": "list", "data": data})
            return
        if path != "/v1/chat/completions":
            await _json(send, 404, _error("Not found.", "not_found"))
            return
        if scope["method"] != "POST":
            await _json(send, 405, _error("Use POST.", "method_not_allowed"))
            return
        body = await _body(receive)
        try:
            request = orjson.loads(body)
            messages = request["messages"]
            assert isinstance(messages, list)
        except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
            await _json(send, 400, _error("A chat completion body is required.", "invalid"))
            return
        served = self._served[settings_text] = self._served.get(settings_text, 0) + 1
        if int(served * behaviour.failure_rate) != int((served - 1) * behaviour.failure_rate):
            status = behaviour.failure_status
            await _json(send, status, _error("Demo upstream failure (scripted).", "demo_failure"))
            return
        await self._complete(request, behaviour, send)

    async def _complete(self, request: dict[str, Any], behaviour: Behaviour, send: Send) -> None:
        cap = request.get("max_completion_tokens") or request.get("max_tokens")
        length = behaviour.length if not isinstance(cap, int) else min(cap, behaviour.length)
        finish = "length" if length < behaviour.length else "stop"
        tokens = demo_tokens(length)
        usage = {
            "prompt_tokens": estimate_prompt_tokens(request["messages"]),
            "completion_tokens": len(tokens),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = f"chatcmpl-demo-{next(self._completion_counter)}"
        created = int(time.time())
        model = str(request.get("model") or MODEL_ID)
        interval = 1 / behaviour.tokens_per_second
        if not request.get("stream"):
            await asyncio.sleep(behaviour.first_token_ms / 1000 + interval * max(0, length - 1))
            answer: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": finish,
                    }
                ],
            }
            if behaviour.usage:
                answer["usage"] = usage
            await _json(send, 200, answer)
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _more(send, chunk({"role": "assistant", "content": ""}))
        await asyncio.sleep(behaviour.first_token_ms / 1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for position, token in enumerate(tokens):
            if behaviour.break_after is not None and position >= behaviour.break_after:
                # an exception after the response started: the server drops the connection
                raise ConnectionAbortedError("demo upstream: scripted broken stream")
            # paced against the start, so the rate holds however late the loop wakes us
            delay = started + position * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await _more(send, chunk({"content": token}))
        await _more(send, chunk({}, finish))
        options = request.get("stream_options") or {}
        if behaviour.usage and options.get("include_usage"):
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await _more(send, b"data: " + orjson.dumps(final) + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "demo_error", "param": None, "code": code}}


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _more(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _json(send: Send, status: int, data: Any) -> None:
    payload = orjson.dumps(data)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


app = DemoUpstream()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8199)
    arguments = parser.parse_args()
    uvicorn.run(app, host=arguments.host, port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
