"""HTTP calls to providers' upstreams (httpx): the check on save and the health probe.

Error texts are ours, built from the status code or the exception class, never from the
upstream's body or the request: an upstream may echo the Authorization header back, and the
text ends up in the database and on the provider's dashboard.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import httpx

from exchange.delivery.endpoints import egress
from exchange.delivery.endpoints.errors import EndpointCheckFailed

logger = logging.getLogger(__name__)

PROBE_PROMPT = "Reply with one word: ok."
PROBE_MAX_TOKENS = 16
# HealthSample.output_tokens_per_second: 12 digits, 3 decimals.
MAX_TOKENS_PER_SECOND = Decimal("999999999.999")
TPS_STEP = Decimal("0.001")


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def _failure_text(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(error, httpx.HTTPError):
        return f"HTTP error ({type(error).__name__})"
    return type(error).__name__


CHECK_FAILED = (
    "The endpoint check failed: GET <base_url>/models, sent with the API key to a public "
    "https address, must answer 200 with an OpenAI model list that includes the model id."
)


def _check_failed(url: str, reason: str) -> EndpointCheckFailed:
    # One answer for every failure: telling refused from timed out from a status code, or
    # showing what the upstream listed, would make the check a port scanner and a reader of
    # whatever answers at that address. The reason is for the operator's log only.
    logger.info("endpoint check of %s failed: %s", url, reason)
    return EndpointCheckFailed(CHECK_FAILED, details={"base_url": "check_failed"})


def models_check(*, base_url: str, api_key: str, model_id: str, timeout: float) -> None:
    """``GET {base_url}/models`` with the key, from a public https address (``egress``); the
    model id must be listed. Raises ``EndpointCheckFailed`` with one generic message whatever
    went wrong; the server log says what (INFO)."""
    url = f"{base_url}/models"
    try:
        egress.url_allowed(base_url)
        with egress.upstream_client(timeout=timeout) as client:
            response = client.get(url, headers=_headers(api_key))
    except egress.UpstreamAddressRefused as error:
        raise _check_failed(url, str(error)) from None
    except httpx.HTTPError as error:
        raise _check_failed(url, f"{_failure_text(error)} ({error})") from None
    if response.status_code != 200:
        raise _check_failed(url, f"HTTP {response.status_code}")
    try:
        listed = {str(item["id"]) for item in response.json()["data"]}
    except (ValueError, KeyError, TypeError):
        raise _check_failed(url, "not an OpenAI model list") from None
    if model_id not in listed:
        raise _check_failed(url, f"model {model_id!r} not among the {len(listed)} listed")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    first_token_ms: int | None = None
    output_tokens_per_second: Decimal | None = None
    error: str = ""


def tokens_per_second(tokens: int, seconds: float) -> Decimal | None:
    """Decode speed after the first token, or None when it cannot be measured (one token)."""
    if tokens < 2 or seconds <= 0:
        return None
    # The clock is a float; the rate is fixed to 3 decimals here, once, and stays exact after.
    rate = (Decimal(tokens - 1) / Decimal(str(seconds))).quantize(TPS_STEP)
    return min(rate, MAX_TOKENS_PER_SECOND)


async def probe(
    client: httpx.AsyncClient, *, base_url: str, api_key: str, model_id: str, timeout: float
) -> ProbeResult:
    """A tiny streamed chat completion: did it answer, how soon, how fast."""
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": PROBE_PROMPT}],
        "max_tokens": PROBE_MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.monotonic()
    first = last = None
    chunks = 0
    usage_tokens = None
    try:
        async with client.stream(
            "POST",
            f"{base_url}/chat/completions",
            json=body,
            headers=_headers(api_key),
            timeout=timeout,
        ) as response:
            if response.status_code != 200:
                return ProbeResult(ok=False, error=f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        now = time.monotonic()
                        first = first if first is not None else now
                        last = now
                        chunks += 1
    except (httpx.HTTPError, ValueError, TypeError, AttributeError) as error:
        return ProbeResult(ok=False, error=_failure_text(error))
    if first is None or last is None:
        return ProbeResult(ok=False, error="no tokens in the answer")
    tokens = usage_tokens if usage_tokens is not None else chunks
    return ProbeResult(
        ok=True,
        first_token_ms=round((first - started) * 1000),
        output_tokens_per_second=tokens_per_second(tokens, last - first),
    )
