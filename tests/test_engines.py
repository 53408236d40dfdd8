"""The engine contract (pipeline/models/engines/base.py) on the tiny model, plus vllm and openai.

The tiny model is random, so its text is noise; the tests pin what the search relies on:
n completions per prompt in order, stop strings kept and nothing after them, reproducible
seeds, greedy outputs that do not depend on padding or batching, honest token counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Self

import pytest
import torch

from pipeline.models.engines import make_engine
from pipeline.models.engines.base import Completion, cut_at_stop
from pipeline.models.engines.hf import TransformersEngine, finish_text
from pipeline.models.engines.openai_engine import OpenAIEngine, OpenAIError
from pipeline.models.engines.vllm_engine import VLLM_MISSING, to_completion
from pipeline.search import steps
from tests.engine_contract import (  # noqa: F401 (the shared contract tests run here too)
    PROMPTS,
    test_max_new_tokens_is_respected_and_counted,
    test_stop_string_is_kept_and_nothing_after_it,
)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> TransformersEngine:
    # One thread: the test machine's cores are shared, and a 64-wide model gains nothing.
    return TransformersEngine(tiny_model_dir, batch_size=4, threads=1)


# --------------------------------------------------------------------------- transformers


def test_n_completions_per_prompt_in_prompt_order(engine):
    results = engine.generate(PROMPTS, n=3, max_new_tokens=6, seed=0)
    assert [len(samples) for samples in results] == [3, 3, 3]
    # The prompts are batched longest-first, yet each prompt's samples come back at its index:
    # asking for a prompt alone gives what it got at index 0 of a call of its own.
    alone = engine.generate(PROMPTS[:1], n=3, max_new_tokens=6, seed=0)
    assert alone[0] == results[0]


def test_same_seed_same_samples_other_seed_differs(engine):
    first = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=7)
    again = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=7)
    other = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=8)
    assert first == again
    assert first != other
    assert first[0][0].text != first[0][1].text  # the n samples of a prompt are distinct draws


def test_samples_do_not_depend_on_batch_size(tiny_model_dir, engine):
    # Each sample has its own random stream, so micro-batching is invisible in the output.
    one_by_one = TransformersEngine(tiny_model_dir, batch_size=1, threads=1)
    kwargs = {"n": 3, "max_new_tokens": 8, "temperature": 0.8, "seed": 3}
    assert one_by_one.generate(PROMPTS, **kwargs) == engine.generate(PROMPTS, **kwargs)


def test_greedy_is_deterministic_and_ignores_the_seed(engine):
    results = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0, seed=1)
    assert all(samples[0] == samples[1] for samples in results)
    assert engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0, seed=99) == results


def test_greedy_output_is_the_same_alone_or_in_a_left_padded_batch(engine):
    batch = engine.generate(PROMPTS, max_new_tokens=10, temperature=0)
    for prompt, in_batch in zip(PROMPTS, batch):
        assert engine.generate([prompt], max_new_tokens=10, temperature=0)[0] == in_batch


def test_greedy_matches_transformers_generate(engine):
    # The engine's own decode loop (shared prompt cache, rows leaving the batch) must produce
    # what the reference implementation produces for the same prompts.
    prompts = PROMPTS[:2]
    tokenizer, model = engine.tokenizer, engine.model
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    reference = model.generate(
        **inputs, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    expected = tokenizer.batch_decode(reference[:, inputs["input_ids"].shape[1] :])
    got = engine.generate(prompts, max_new_tokens=10, temperature=0)
    assert [samples[0].text for samples in got] == expected


def test_tiny_temperature_reproduces_greedy_for_every_sample(engine):
    # All n samples continue one shared prompt cache; at a vanishing temperature each must
    # equal the greedy continuation, which checks the cache was copied to every sample intact.
    greedy = engine.generate(PROMPTS, max_new_tokens=8, temperature=0)
    cold = engine.generate(PROMPTS, n=3, max_new_tokens=8, temperature=1e-4, seed=5)
    for (expected,), samples in zip(greedy, cold):
        assert [s.text for s in samples] == [expected.text] * 3


def test_scripted_model_stops_at_marker_and_at_eos(tiny_model_dir, monkeypatch):
    # Replace the network by a script of tokens to pin decoding: an added special marker such
    # as <end_of_step> survives decoding, the tokenizer's own EOS does not, and tokens count
    # every generated token (EOS included).
    engine = TransformersEngine(tiny_model_dir, threads=1)
    engine.tokenizer.add_special_tokens({"additional_special_tokens": list(steps.MARKERS)})
    marker = engine.tokenizer.convert_tokens_to_ids(steps.END_OF_STEP)
    code = engine.tokenizer("x = 1\n", add_special_tokens=False)["input_ids"]
    eos = engine.tokenizer.eos_token_id

    def scripted(script: list[int]):
        calls = iter(range(10_000))

        def forward(input_ids, mask, positions, cache):
            logits = torch.zeros((input_ids.shape[0], len(engine.tokenizer)))
            logits[:, script[min(next(calls), len(script) - 1)]] = 10.0
            return logits

        return forward

    monkeypatch.setattr(engine, "_forward", scripted(code + [marker] + code))
    [[stop]] = engine.generate(["p"], max_new_tokens=20, temperature=0, stop=steps.STOP_STRINGS)
    assert stop == Completion("x = 1\n<end_of_step>", len(code) + 1, "stop")

    monkeypatch.setattr(engine, "_forward", scripted(code + [eos] + code))
    [[ended]] = engine.generate(["p"], max_new_tokens=20, temperature=0, stop=steps.STOP_STRINGS)
    assert ended == Completion("x = 1\n", len(code) + 1, "eos")


def test_finish_text_strips_own_specials_and_cuts_after_first_stop():
    completion = finish_text(
        "<|im_start|>a = 1\n<end_of_step>\nb = 2\n<end_of_code>", 9, "length",
        steps.STOP_STRINGS, ("<|im_start|>", "<|im_end|>"),
    )  # fmt: skip
    assert completion == Completion("a = 1\n<end_of_step>", 9, "stop")
    assert cut_at_stop("abc", ["x"]) == ("abc", None)
    assert cut_at_stop("xxabyy", ["aby", "ab"]) == ("xxab", "ab")  # the earliest end wins


def test_bad_requests_fail_before_any_work(engine):
    with pytest.raises(ValueError, match="n must be at least 1"):
        engine.generate(PROMPTS, n=0)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(PROMPTS, top_p=0)


# --------------------------------------------------------------------------- factory and vllm


def test_unknown_engine_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown engine 'llamacpp'.*transformers, vllm, openai"):
        make_engine("llamacpp", "model")


def test_importing_the_engines_does_not_import_vllm():
    code = (
        "import sys, pipeline.models.engines, pipeline.models.engines.vllm_engine,"
        " pipeline.models.engines.hf;"
        "assert 'vllm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_vllm_engine_without_the_gpu_extra_says_how_to_get_it():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError) as error:
        make_engine("vllm", "some/model")
    assert str(error.value) == VLLM_MISSING
    assert "pip install 'rstar-data[gpu]'" in VLLM_MISSING


@pytest.mark.parametrize(
    ("text", "finish", "stop_reason", "expected"),
    [
        ("x = 1\n<end_of_step>", "stop", "<end_of_step>", ("x = 1\n<end_of_step>", "stop")),
        ("x = 1\n", "stop", "<end_of_step>", ("x = 1\n<end_of_step>", "stop")),  # re-appended
        ("x = 1\n", "stop", None, ("x = 1\n", "eos")),  # vllm: stop_reason None means EOS
        ("x = 1", "length", None, ("x = 1", "length")),
    ],
)
def test_vllm_outputs_map_onto_the_contract(text, finish, stop_reason, expected):
    sample = SimpleNamespace(
        text=text, finish_reason=finish, stop_reason=stop_reason, token_ids=[1, 2, 3]
    )
    assert to_completion(sample, steps.STOP_STRINGS) == Completion(expected[0], 3, expected[1])


# --------------------------------------------------------------------------- openai


class FakeServer:
    """An OpenAI-compatible /v1/completions stand-in on 127.0.0.1.

    It answers 503 to its first request (to exercise the retry), records every payload and
    header, tracks how many requests are in flight at once, and returns for each prompt three
    choices like vllm does: one that hit ``<end_of_step>`` (text without it, ``stop_reason``
    naming it), one that hit EOS (``stop_reason`` None), one cut by ``max_tokens``.
    """

    def __init__(self, delay_s: float = 0.0, fail_first: int = 1, status: int = 503) -> None:
        self.payloads: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.requests = 0
        self._lock = threading.Lock()
        self.delay_s, self.fail_first, self.status = delay_s, fail_first, status
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests += 1
                    failing = server.requests <= server.fail_first
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    if not failing:
                        server.payloads.append(payload)
                        server.headers.append(dict(self.headers))
                time.sleep(server.delay_s)
                with server._lock:
                    server.in_flight -= 1
                if failing:
                    self._send(server.status, {"error": {"message": "overloaded, try later"}})
                else:
                    self._send(200, server.answer(payload))

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    @staticmethod
    def answer(payload: dict) -> dict:
        tag = payload["prompt"][-1]
        choices = [
            {"index": 2, "text": f"long {tag}", "finish_reason": "length", "stop_reason": None},
            {
                "index": 0,
                "text": f"x = {tag}\n",
                "finish_reason": "stop",
                "stop_reason": "<end_of_step>",
            },
            {"index": 1, "text": f"done {tag}", "finish_reason": "stop", "stop_reason": None},
        ]
        choices = [choice for choice in choices if choice["index"] < payload["n"]]
        return {"choices": choices, "usage": {"completion_tokens": 12 * payload["n"]}}

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_engine_retries_restores_stop_strings_and_sends_the_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer() as server:
        engine = OpenAIEngine("policy", base_url=server.url, api_key="k3y", backoff_s=0.01)
        results = engine.generate(
            ["p1", "p2"], n=3, stop=steps.STOP_STRINGS, max_new_tokens=64, temperature=0.7, seed=4
        )
        engine.close()
    assert server.requests == 3  # the first request got 503 and was retried
    # Tokens: usage.completion_tokens (36) shared out by text length (19, 6, 6 characters):
    # floor(36 * 19 / 31) = 22, 6, 6, and the 2 left over go to the longest texts first.
    assert results[0] == [
        Completion("x = 1\n<end_of_step>", 23, "stop"),  # the stop string is put back
        Completion("done 1", 7, "eos"),
        Completion("long 1", 6, "length"),
    ]
    assert sum(c.tokens for c in results[1]) == 36
    payload = min(server.payloads, key=lambda p: p["prompt"])
    assert {k: payload[k] for k in ("model", "prompt", "n", "max_tokens", "temperature", "top_p")} == {
        "model": "policy", "prompt": "p1", "n": 3, "max_tokens": 64, "temperature": 0.7, "top_p": 1.0,
    }  # fmt: skip
    assert payload["stop"] == list(steps.STOP_STRINGS)
    assert isinstance(payload["seed"], int)
    assert {p["seed"] for p in server.payloads} != {payload["seed"]}  # one stream per prompt
    assert all(h["Authorization"] == "Bearer k3y" for h in server.headers)


def test_openai_engine_trims_text_a_server_ran_past_the_stop(monkeypatch):
    monkeypatch.setattr(
        FakeServer, "answer",
        staticmethod(lambda p: {"choices": [{"index": 0, "text": "a<end_of_step>junk", "finish_reason": "stop"}]}),
    )  # fmt: skip
    with FakeServer(fail_first=0) as server:
        [[completion]] = OpenAIEngine("m", base_url=server.url).generate(
            ["p"], stop=["<end_of_step>"]
        )
    assert completion.text == "a<end_of_step>"
    assert completion.finish_reason == "stop"
    assert completion.tokens >= 1  # no usage given: estimated


def test_openai_engine_bounds_concurrency():
    with FakeServer(delay_s=0.15, fail_first=0) as server:
        engine = OpenAIEngine("m", base_url=server.url, max_concurrency=3)
        results = engine.generate([f"p{i}" for i in range(9)], n=1)
        engine.close()
    assert [samples[0].text for samples in results] == [f"x = {i}\n<end_of_step>" for i in range(9)]
    assert server.max_in_flight == 3


def test_openai_engine_does_not_retry_a_refused_request():
    with FakeServer(fail_first=5, status=400) as server:
        engine = OpenAIEngine("m", base_url=server.url, backoff_s=0.01)
        with pytest.raises(OpenAIError, match=r"HTTP 400 .*overloaded") as error:
            engine.generate(["p"])
    assert server.requests == 1
    assert "\n" not in str(error.value)


def test_openai_engine_gives_up_on_a_dead_server():
    with FakeServer() as server:
        url = server.url
    engine = OpenAIEngine("m", base_url=url, max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(OpenAIError, match="no answer after 3 attempts"):
        engine.generate(["p"])
