"""The OpenAI-compatible server, exercised with the official ``openai`` client over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn

from unimask.sampling.backbone import Generation
from unimask.serve.app import ServeConfig, create_app

openai = pytest.importorskip("openai")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                "required": ["query"],
            },
        },
    }
]


class EchoBackbone:
    """A deterministic test double: the completion is a function of the prompt alone.

    It streams word by word through ``on_update`` like a real sampler, and emits a tool call
    when the last user turn asks to search.
    """

    kind = "scripted"

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.calls: list[int] = []

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop=None, constraint=None,
                 on_update=None, **decoding: Any) -> list[Generation]:
        self.calls.append(len(prompts))
        out = []
        for i, p in enumerate(prompts):
            tail = p.rsplit("<|user|>", 1)[-1].split("<|end|>", 1)[0]
            if "please search" in tail:
                text = '<think>look it up</think><tool_call>{"name": "search", "arguments": {"query": "json"}}</tool_call>'
            else:
                words = [f"w{abs(hash(tail)) % 997}", *tail.split()][: max(1, max_new_tokens // 2)]
                text = " ".join(words)
            for s in stop or ():
                if s in text:
                    text = text.split(s, 1)[0]
            if on_update is not None:
                for j in range(1, len(text.split(" ")) + 1):
                    on_update(i, " ".join(text.split(" ")[:j]))
            time.sleep(0.005)
            out.append(Generation(text, self.tokenizer.encode(text), nfe=len(text.split()), wall_time=0.005,
                                  stop_reason="eos"))
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_tokenizer) -> Iterator[tuple[str, EchoBackbone]]:
    backbone = EchoBackbone(tiny_tokenizer)
    app = create_app(backbone, ServeConfig(model_name="echo", api_key="sekret", max_tokens_limit=64,
                                           max_body_bytes=20_000, batch_window_ms=20))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", backbone
    srv.should_exit = True
    thread.join(timeout=10)


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0, timeout=20)


def test_models_and_completion(server):
    url, _ = server
    client = _client(url)
    assert [m.id for m in client.models.list().data] == ["echo"]
    r = client.completions.create(model="echo", prompt="<|user|>hello there<|end|>", max_tokens=8)
    assert r.choices[0].text.split()[1:] == ["hello", "there"]
    assert r.usage.completion_tokens > 0


def test_chat_and_tool_call(server):
    url, _ = server
    client = _client(url)
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "good morning"}],
                                       max_tokens=10)
    assert r.choices[0].message.content.split()[1:] == ["good", "morning"]
    r = client.chat.completions.create(
        model="echo", tools=TOOLS, messages=[{"role": "user", "content": "please search json"}], max_tokens=60
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "json"}
    # The tool result goes back in and renders as a tool turn.
    r2 = client.chat.completions.create(
        model="echo",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "please search json"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "json: JSON encoder"},
            {"role": "user", "content": "thanks"},
        ],
        max_tokens=10,
    )
    assert r2.choices[0].message.content.split()[1:] == ["thanks"]


def test_streaming_chat_and_completion(server):
    url, _ = server
    client = _client(url)
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one two three four"}], max_tokens=20, stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([d for d in deltas if d]) >= 3  # streamed in pieces, not one blob
    assert "".join(deltas).split()[1:] == ["one", "two", "three", "four"]
    stream = client.completions.create(model="echo", prompt="<|user|>a b c<|end|>", max_tokens=20, stream=True)
    text = "".join(c.choices[0].text for c in stream)
    assert text.split()[1:] == ["a", "b", "c"]
    stream = client.chat.completions.create(
        model="echo", tools=TOOLS, messages=[{"role": "user", "content": "please search it"}], max_tokens=60,
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "search"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "echo"}).encode(), 400, "messages"),
        (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "not found"),
        (json.dumps({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "role"),
        (json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}).encode(),
         400, "limit"),
        (json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 3}).encode(), 400, "n"),
        (json.dumps({"model": "echo", "messages": [{"role": "user", "content": "x" * 30_000}]}).encode(), 413,
         "larger"),
        (json.dumps({"model": "echo", "messages": []}).encode(), 400, "messages"),
        (json.dumps([1, 2]).encode(), 400, "invalid"),
    ],
)
def test_malformed_requests_get_4xx(server, body, status, needle):
    url, _ = server
    r = httpx.post(url + "/v1/chat/completions", content=body,
                   headers={"Authorization": "Bearer sekret", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_auth_required(server):
    url, _ = server
    r = httpx.get(url + "/v1/models")
    assert r.status_code == 401
    r = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_concurrent_load_no_5xx_no_mixups(server):
    """Bounded load: 48 requests from 12 threads; each answer must belong to its own prompt."""
    url, backbone = server
    client = _client(url)
    backbone.calls.clear()

    def one(i: int) -> tuple[int, str]:
        r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": f"tag{i} x"}],
                                           max_tokens=8)
        return i, r.choices[0].message.content

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(48)))
    for i, content in results:
        assert content.split()[1:] == [f"tag{i}", "x"]
    assert max(backbone.calls) > 1  # concurrent requests were batched together


@pytest.mark.parametrize("kind", ["ar", "block_diffusion", "hf"])
def test_real_backbones_behind_the_server(tiny_tokenizer, tmp_path, kind):
    """Tiny real checkpoints (ours AR / block diffusion, and a local HF dir) served and queried."""
    import torch

    from unimask.model import Transformer, save_checkpoint
    from unimask.model.hf import export_hf
    from unimask.presets import model_preset
    from unimask.sampling import load_backbone

    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", max_seq_len=1024))
    if kind == "hf":
        path = export_hf(model, tiny_tokenizer, tmp_path / "hf")
    else:
        path = save_checkpoint(tmp_path / kind, model, tiny_tokenizer,
                               {"backbone": kind, "block_size": 4, "clean_attention": "causal"})
    backbone = load_backbone(path, device="cpu")
    app = create_app(backbone, ServeConfig(model_name="m", max_tokens_limit=32))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.02)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                           tools=TOOLS)
        assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert r.usage.completion_tokens <= 8
        chunks = list(client.completions.create(model="m", prompt="def f(", max_tokens=8, stream=True,
                                                temperature=0))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        streamed = "".join(c.choices[0].text for c in chunks)
        direct = backbone.generate(["def f("], max_new_tokens=8, temperature=0.0)[0].text
        assert streamed == direct  # the stream reassembles to the same greedy text
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
