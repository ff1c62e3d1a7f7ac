"""The gateway's metering core: what a request may cost, what it did cost, whether it met the
market's service level.

Pure: the standard library only (an import-linter contract keeps Django, the database and I/O
out); no clock (times come in as milliseconds measured by the caller), no randomness. The gateway
(``exchange.delivery.gateway.proxy``) feeds it what it sees on the wire.

- ``estimate_tokens`` / ``estimate_prompt_tokens``: a conservative token count without the
  model's tokenizer (the providers' tokenizers differ and their vocabularies cannot be fetched
  here). Used to reserve a request's worst case, and to charge a provider's answer that reported
  no usage (then the generation says ``usage_source: estimated``).
- ``usage_parse``: a provider's ``usage`` object, validated (non-negative integers or nothing).
- ``usage_bound``: the most a provider may bill for what we counted (``StreamMeter.usage``
  caps its reported usage there and marks it ``provider_disputed``).
- ``StreamMeter``: watches the chunks of a stream (or a whole response): time to first token,
  time of the last token, finish reason, the provider's usage, the text for an estimate.
- ``sla_evaluate``: time to first token and output tokens/s against the market's spec.
- ``reservation_size``: the worst case to reserve before forwarding.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

# Chat formats wrap each message in a few special tokens (role, separators): OpenAI documents
# 3-4 per message and 3 to prime the reply; providers are similar. Counted so the estimate errs
# high, as a reservation must.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
# An image or audio part of a message: the most OpenAI charges for one high-detail image tile set
# (85 + 170 × 4). Only an estimate for the reservation; the provider's usage is what is charged.
TOKENS_PER_MEDIA_PART = 765

# CJK ideographs, kana and hangul: BPE vocabularies give most of them a token each (often more).
_CJK = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f"
)
_PIECES = re.compile(rf"[{_CJK}]|\d{{1,3}}|[^\W\d_{_CJK}]+|[^\w\s]|_", re.UNICODE)
# A run of letters counts one token per started 4 characters: common English words are one token
# in every BPE vocabulary, longer ones split; 4 is the figure OpenAI quotes for English text.
_LETTERS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``, erring high: one per CJK character, per group of up to 3 digits, per
    punctuation mark, and per started 4 letters of a word (spaces ride with the next word)."""
    count = 0
    for piece in _PIECES.findall(text):
        if piece[0].isalpha() and len(piece) > 1:
            count += -(-len(piece) // _LETTERS_PER_TOKEN)
        else:
            count += 1
    return count


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):  # content parts: text, image_url, input_audio, …
        total = 0
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                total += estimate_tokens(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") in ("image_url", "input_audio"):
                total += TOKENS_PER_MEDIA_PART
            else:
                total += _json_tokens(part)
        return total
    return _json_tokens(content)


def _json_tokens(value: Any) -> int:
    return estimate_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def estimate_prompt_tokens(
    messages: list[dict[str, Any]], *, tools: Any = None, response_format: Any = None
) -> int:
    """The prompt tokens of a chat request, erring high (see ``estimate_tokens``)."""
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
        for field in ("name", "tool_call_id"):
            if isinstance(message.get(field), str):
                total += estimate_tokens(message[field])
        if message.get("tool_calls"):
            total += _json_tokens(message["tool_calls"])
    if tools:
        total += _json_tokens(tools)
    if response_format:
        total += _json_tokens(response_format)
    return total


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    # "provider" (the upstream's usage), "estimated" (it reported none: counted here) or
    # "provider_disputed" (it reported more than we could count: billed at our bound)
    source: str
    # our own count of the completion (the estimate), None when not counted; what the output
    # speed is computed from, so a provider's count cannot flatter its own service level
    counted_completion_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


USAGE_PROVIDER = "provider"
USAGE_ESTIMATED = "estimated"
USAGE_DISPUTED = "provider_disputed"

# How far a provider's reported usage may exceed our own count before it is capped (see
# ``usage_bound``): our count errs high for text, so honest providers stay well inside; the
# slack covers a few special tokens per answer (end-of-turn, tool-call wrappers).
USAGE_TOLERANCE = Decimal("1.5")
USAGE_SLACK_TOKENS = 32


def usage_bound(counted: int, *, tolerance: Decimal, slack: int) -> int:
    """The most tokens we bill for ``counted`` tokens we saw: ceil(counted × tolerance) +
    slack."""
    return int((Decimal(counted) * tolerance).to_integral_value(rounding=ROUND_CEILING)) + slack


def _count(value: Any) -> int | None:
    # bool is an int subclass; a provider sending true/false as a count is not a count
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def usage_parse(usage: Any) -> Usage | None:
    """A provider's ``usage`` object as a ``Usage``, or None when it is missing or malformed
    (then the gateway estimates)."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion, USAGE_PROVIDER)


def _delta_texts(delta: Any) -> list[str]:
    """The generated text pieces of a delta (or a whole message): content, refusal, reasoning
    and tool calls (their name and arguments are generated tokens too)."""
    if not isinstance(delta, dict):
        return []
    pieces = [
        value
        for field in ("content", "refusal", "reasoning_content", "reasoning")
        if isinstance(value := delta.get(field), str) and value
    ]
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                pieces.extend(
                    value
                    for field in ("name", "arguments")
                    if isinstance(value := function.get(field), str) and value
                )
    return pieces


# The finish reasons OpenAI's protocol defines; another from a provider is kept (the buyer sees
# it as sent) but recorded cut to the generation's column.
FINISH_REASONS = frozenset(("stop", "length", "tool_calls", "content_filter", "function_call"))
FINISH_REASON_MAX = 32


def finish_reason_clean(value: Any) -> str | None:
    """A provider's ``finish_reason`` as we record it: a known one as is, any other string cut
    to ``FINISH_REASON_MAX`` characters (a provider's choice of words must never make the
    record of a settled charge fail), anything else None."""
    if not isinstance(value, str):
        return None
    if value in FINISH_REASONS:
        return value
    return value[:FINISH_REASON_MAX]


class StreamMeter:
    """What one upstream answer delivered, fed chunk by chunk with the time each arrived (ms since
    the request was forwarded). A chunk with only a role or only usage is not a token."""

    __slots__ = ("_texts", "finish_reason", "first_token_ms", "last_token_ms", "provider_usage")

    def __init__(self) -> None:
        self.first_token_ms: int | None = None
        self.last_token_ms: int | None = None
        self.finish_reason: str | None = None
        self.provider_usage: Usage | None = None
        self._texts: list[str] = []

    def chunk(self, data: dict[str, Any], at_ms: int) -> bool:
        """Take one ``chat.completion.chunk``; True when it carried generated tokens."""
        usage = usage_parse(data.get("usage"))
        if usage is not None:
            self.provider_usage = usage
        generated = False
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                texts = _delta_texts(choice.get("delta"))
                if texts:
                    self._texts.extend(texts)
                    generated = True
                if isinstance(choice.get("finish_reason"), str):
                    self.finish_reason = finish_reason_clean(choice["finish_reason"])
        if generated:
            if self.first_token_ms is None:
                self.first_token_ms = at_ms
            self.last_token_ms = at_ms
        return generated

    def response(self, data: dict[str, Any], at_ms: int) -> None:
        """Take a whole ``chat.completion`` (a non-streamed answer, arrived at ``at_ms``)."""
        self.provider_usage = usage_parse(data.get("usage"))
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                self._texts.extend(_delta_texts(choice.get("message")))
                if isinstance(choice.get("finish_reason"), str):
                    self.finish_reason = finish_reason_clean(choice["finish_reason"])
        if self._texts:
            self.first_token_ms = self.last_token_ms = at_ms

    @property
    def completion_estimate(self) -> int:
        return sum(estimate_tokens(text) for text in self._texts)

    def usage(
        self,
        *,
        prompt_estimate: int,
        tolerance: Decimal = USAGE_TOLERANCE,
        slack: int = USAGE_SLACK_TOKENS,
    ) -> Usage:
        """What to bill: the provider's usage when it reported one, each count capped at
        ``usage_bound`` of ours (then marked ``provider_disputed``: a provider cannot bill far
        more than it delivered); else our estimate (marked ``estimated``)."""
        counted = self.completion_estimate
        reported = self.provider_usage
        if reported is None:
            return Usage(prompt_estimate, counted, USAGE_ESTIMATED, counted)
        prompt = min(
            reported.prompt_tokens, usage_bound(prompt_estimate, tolerance=tolerance, slack=slack)
        )
        completion = min(
            reported.completion_tokens, usage_bound(counted, tolerance=tolerance, slack=slack)
        )
        disputed = (prompt, completion) != (reported.prompt_tokens, reported.completion_tokens)
        return Usage(prompt, completion, USAGE_DISPUTED if disputed else USAGE_PROVIDER, counted)


def reservation_size(
    *, prompt_estimate: int, max_tokens: int | None, default_max_tokens: int
) -> tuple[int, int]:
    """(input tokens, output tokens) to reserve: the prompt estimate and the completion cap."""
    return prompt_estimate, max_tokens if max_tokens is not None else default_max_tokens


class ServiceLevel(NamedTuple):
    """A market's service level (``Market.max_first_token_latency_ms``, ``min_throughput_tps``;
    0 means no requirement)."""

    max_first_token_latency_ms: int
    min_throughput_tps: int


class SlaOutcome(NamedTuple):
    met: bool
    reason: str  # "" when met; else first_token_latency, throughput, total_time, broken_stream


SLA_MET = SlaOutcome(True, "")

_RATE_STEP = Decimal("0.01")


def output_tokens_per_second(
    *, completion_tokens: int, first_token_ms: int | None, last_token_ms: int | None
) -> Decimal | None:
    """Generation speed after the first token: (tokens − 1) over the time from the first to the
    last token. None when it cannot be measured (fewer than 2 tokens, or all in one instant) —
    a rate from one interval is noise, and a one-token answer has no speed to judge."""
    if first_token_ms is None or last_token_ms is None or completion_tokens < 2:
        return None
    elapsed = last_token_ms - first_token_ms
    if elapsed <= 0:
        return None
    rate = Decimal(completion_tokens - 1) * 1000 / Decimal(elapsed)
    return rate.quantize(_RATE_STEP, rounding=ROUND_HALF_UP)


def sla_evaluate(
    *,
    level: ServiceLevel,
    streamed: bool,
    first_token_ms: int | None,
    last_token_ms: int | None,
    total_ms: int,
    completion_tokens: int,
    broken: bool,
) -> SlaOutcome:
    """Did this request meet the market's service level?

    A stream the provider broke misses it. A stream is judged on its time to first token (an
    answer with no token at all: on its total time) and its output speed. A non-streamed answer
    has no first token to time, so it is judged on its total time against what the spec allows
    for its length: the first-token bound plus the completion at the minimum speed.
    """
    if broken:
        return SlaOutcome(False, "broken_stream")
    latency_bound = level.max_first_token_latency_ms
    if not streamed:
        allowed = latency_bound
        if level.min_throughput_tps > 0:
            allowed += -(-completion_tokens * 1000 // level.min_throughput_tps)
        if latency_bound > 0 and total_ms > allowed:
            return SlaOutcome(False, "total_time")
        return SLA_MET
    waited = first_token_ms if first_token_ms is not None else total_ms
    if latency_bound > 0 and waited > latency_bound:
        return SlaOutcome(False, "first_token_latency")
    rate = output_tokens_per_second(
        completion_tokens=completion_tokens,
        first_token_ms=first_token_ms,
        last_token_ms=last_token_ms,
    )
    if level.min_throughput_tps > 0 and rate is not None and rate < level.min_throughput_tps:
        return SlaOutcome(False, "throughput")
    return SLA_MET


def units_to_decimal(units: int, decimals: int) -> Decimal:
    """Ledger units (10**-decimals of the currency) as an exact Decimal with all its places."""
    return Decimal(units).scaleb(-decimals).quantize(Decimal(1).scaleb(-decimals))
