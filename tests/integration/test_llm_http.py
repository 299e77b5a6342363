"""The LLM port's real adapter over real HTTP, with the SDK's own HTTP client: a server that never answers,
errors retried over a real connection, a server answering nonsense, and one that is not there."""

from __future__ import annotations

import socket
import time

import pytest

from connectors.llm import ChatModel, LLMBadResponse, LLMTimeout, LLMUnavailable, Reply, call, connect
from tests.agent.llm_server import scripted_llm

MESSAGES = [{"role": "user", "content": "XID 79 on gpu-node-003"}]


def model_at(base_url: str, *, timeout_s: float = 5.0, max_retries: int = 0) -> ChatModel:
    return connect(model="scripted-model", base_url=base_url, api_key="test-key", timeout_s=timeout_s,
                   max_retries=max_retries)


def test_an_answer_over_http() -> None:
    with scripted_llm([Reply(tool_calls=[call("drain_node", targets=["node/gpu-node-003"])])]) as llm:
        reply = model_at(llm.base_url).complete(MESSAGES, max_tokens=50)
    assert [c.name for c in reply.tool_calls] == ["drain_node"] and reply.usage is not None
    assert llm.requests[0]["max_tokens"] == 50


def test_a_server_that_never_answers_times_out() -> None:
    with scripted_llm([Reply(timeout=True)]) as llm:
        began = time.monotonic()
        with pytest.raises(LLMTimeout, match=r"timed out after 0\.5s"):
            model_at(llm.base_url, timeout_s=0.5).complete(MESSAGES)
        assert time.monotonic() - began < 5 and len(llm.requests) == 1


def test_a_server_error_is_retried_over_http() -> None:
    with scripted_llm([Reply(status=500), Reply(content="recovered")]) as llm:
        assert model_at(llm.base_url, max_retries=1).complete(MESSAGES).content == "recovered"
    assert len(llm.requests) == 2


def test_server_errors_past_the_retries_are_unavailable() -> None:
    with scripted_llm([Reply(status=500), Reply(status=502)]) as llm, \
            pytest.raises(LLMUnavailable, match="HTTP 502") as caught:
        model_at(llm.base_url, max_retries=1).complete(MESSAGES)
    assert caught.value.status_code == 502


def test_a_server_answering_nonsense_is_a_bad_response() -> None:
    with scripted_llm([Reply(body=b"Welcome to nginx!")]) as llm, pytest.raises(LLMBadResponse, match="not JSON"):
        model_at(llm.base_url).complete(MESSAGES)


def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LLMUnavailable, match="unreachable"):
        model_at(f"http://127.0.0.1:{port}/v1").complete(MESSAGES)
