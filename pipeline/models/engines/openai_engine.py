"""The openai engine: any OpenAI-compatible ``/v1/completions`` server (docs/algorithm.md).

``vllm serve``, SGLang and llama.cpp's server all speak it. Requests go out from a bounded
thread pool (one request per prompt, asking for ``n`` choices), are retried with exponential
backoff on 429, 5xx and connection errors, and their answers are normalised to the contract:
servers drop the stop string from ``text``, so the one that matched (vllm's ``stop_reason``,
llama.cpp's ``stopping_word``) is put back. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.models.engines.base import Completion, Engine, check_request, cut_at_stop, derive_seed

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIError(RuntimeError):
    """A request the server refused or that failed after every retry (one line)."""


class OpenAIEngine(Engine):
    """Completions from ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``) for ``model``."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.model = model
        self.url = base_url.rstrip("/") + "/completions"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai")

    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        *,
        stop: Sequence[str] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[Completion]]:
        check_request(n, max_new_tokens, temperature, top_p)
        stop = [s for s in stop if s]
        payloads = [
            {
                **self.extra_body,
                "model": self.model,
                "prompt": prompt,
                "n": n,
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": derive_seed(seed, index)
                >> 32,  # one stream per prompt; 31 bits suit servers
                **({"stop": stop} if stop else {}),
            }
            for index, prompt in enumerate(prompts)
        ]
        responses = list(self._pool.map(self._post, payloads))
        return [completions_from_response(response, n, stop) for response in responses]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ HTTP

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST one request, retrying transient failures with exponential backoff."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                if error.code not in RETRY_STATUSES or attempt == self.max_retries:
                    raise OpenAIError(f"{self.url}: HTTP {error.code} {detail}") from None
                delay = _retry_after(error) or self._delay(attempt)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if attempt == self.max_retries:
                    reason = getattr(error, "reason", error)
                    raise OpenAIError(
                        f"{self.url}: no answer after {attempt + 1} attempts ({reason})"
                    ) from None
                delay = self._delay(attempt)
            except json.JSONDecodeError:
                raise OpenAIError(f"{self.url}: the server's answer is not JSON") from None
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so retrying clients do not stampede together."""
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return base * (0.5 + random.random() / 2)


def completions_from_response(
    response: dict[str, Any], n: int, stop: Sequence[str]
) -> list[Completion]:
    """The ``n`` choices of one response, in index order, normalised to the contract."""
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise OpenAIError(f"the server returned {len(choices)} choices where {n} were asked for")
    texts_and_reasons = [_normalise_choice(choice, stop) for choice in choices]
    counts = _token_counts(response, choices, [text for text, _ in texts_and_reasons])
    return [
        Completion(text, tokens, reason)  # type: ignore[arg-type]
        for (text, reason), tokens in zip(texts_and_reasons, counts)
    ]


def _normalise_choice(choice: dict[str, Any], stop: Sequence[str]) -> tuple[str, str]:
    """(text including its stop string, finish reason) of one choice.

    ``finish_reason == "stop"`` covers stop strings and EOS alike; the matched stop string
    comes from vllm's ``stop_reason`` or llama.cpp's ``stopping_word``. Without either the
    server cannot tell us, and the completion counts as ended by EOS.
    """
    text, matched = cut_at_stop(choice.get("text") or "", stop)
    if matched is not None:
        return text, "stop"
    if choice.get("finish_reason") == "length":
        return text, "length"
    for key in ("stop_reason", "stopping_word"):
        value = choice.get(key)
        if isinstance(value, str) and value:
            return text + value, "stop"
    return text, "eos"


def _token_counts(response: dict[str, Any], choices: list[dict], texts: list[str]) -> list[int]:
    """Generated tokens per choice: per-choice logprobs when present, else the response's
    ``usage.completion_tokens`` shared out by text length, else an estimate (4 chars a token)."""
    per_choice = []
    for choice in choices:
        tokens = (choice.get("logprobs") or {}).get("tokens")
        per_choice.append(len(tokens) if tokens is not None else None)
    if all(count is not None for count in per_choice):
        return per_choice  # type: ignore[return-value]
    total = (response.get("usage") or {}).get("completion_tokens")
    if isinstance(total, int) and total >= 0:
        return _share(total, [len(text) for text in texts])
    return [max(1, round(len(text) / 4)) for text in texts]


def _share(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that add up to ``total``."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        base = [total // len(weights)] * len(weights)
        base[0] += total - sum(base)
        return base
    shares = [total * w // weight_sum for w in weights]
    remainder = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: -weights[i])
    for i in order[:remainder]:
        shares[i] += 1
    return shares


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read().decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text.splitlines()[0][:200] if text else error.reason) or ""


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None
