"""The LLM port's real adapter against the scripted model in memory: what it sends, how it reads an answer,
and how every failure becomes one of the port's errors (transient ones as LLMUnavailable)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connectors.llm import (
    ChatReply,
    LLMBadResponse,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    OpenAIChatModel,
    Reply,
    ScriptedChat,
    TokenUsage,
    ToolCall,
    call,
    parse_reply,
)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "XID 79 on gpu-node-003"}]
TOOL = {"type": "function", "function": {"name": "cordon_node", "parameters": {"type": "object"}}}


def ask(chat: ScriptedChat, **options: Any) -> ChatReply:
    model = chat.chat_model("scripted-model", max_retries=options.pop("max_retries", 0))
    try:
        return model.complete(MESSAGES, **options)
    finally:
        model.close()


def test_the_adapter_names_the_model_its_requests_name() -> None:
    chat = ScriptedChat([Reply(content="hello")])
    model = chat.chat_model("a-named-model")
    try:
        assert model.name == "a-named-model"
        assert model.complete(MESSAGES).content == "hello" and chat.requests[0]["model"] == model.name
    finally:
        model.close()


def test_a_tool_call_comes_back_typed_with_its_usage() -> None:
    chat = ScriptedChat([Reply(tool_calls=[call("cordon_node", targets=["node/gpu-node-003"])], content="why")])
    reply = ask(chat, tools=[TOOL], max_tokens=100)
    assert reply.content == "why" and reply.refusal is None and reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (ToolCall("call_1_0", "cordon_node", '{"targets": ["node/gpu-node-003"]}'),)
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    sent = chat.requests[0]
    assert sent["model"] == "scripted-model" and sent["messages"] == MESSAGES and sent["tools"] == [TOOL]
    assert sent["tool_choice"] == "auto" and sent["temperature"] == 0 and sent["max_tokens"] == 100


def test_without_tools_none_are_offered() -> None:
    chat = ScriptedChat([Reply(content="hello")])
    assert ask(chat).content == "hello"
    assert "tools" not in chat.requests[0] and "tool_choice" not in chat.requests[0]


def test_the_answer_continues_the_conversation_in_wire_format() -> None:
    reply = ChatReply(content=None, tool_calls=(ToolCall("c1", "drain_node", "{}"),))
    assert reply.as_message() == {"role": "assistant", "content": "",
                                  "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "drain_node", "arguments": "{}"}}]}


def test_a_refusal_is_an_answer_not_an_error() -> None:
    assert ask(ScriptedChat([Reply(refusal="I can't help with that.")])).refusal == "I can't help with that."


def test_a_script_may_be_a_function_of_the_request() -> None:
    chat = ScriptedChat(lambda body: Reply(content=f"{len(body['messages'])} messages"))
    assert ask(chat).content == "2 messages" and ask(chat).content == "2 messages" and len(chat.requests) == 2


def test_an_exhausted_script_is_a_refused_request() -> None:
    with pytest.raises(LLMError, match="no more answers") as caught:
        ask(ScriptedChat([]))
    assert caught.value.status_code == 400 and not isinstance(caught.value, LLMUnavailable)


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_statuses_are_unavailable_after_the_retries(status: int) -> None:
    chat = ScriptedChat([Reply(status=status), Reply(status=status)])
    with pytest.raises(LLMUnavailable, match=f"HTTP {status}.*1 retries") as caught:
        ask(chat, max_retries=1)
    assert caught.value.status_code == status and len(chat.requests) == 2


def test_a_transient_status_then_an_answer_is_one_answer() -> None:
    chat = ScriptedChat([Reply(status=503), Reply(content="back")])
    assert ask(chat, max_retries=1).content == "back" and len(chat.requests) == 2


@pytest.mark.parametrize(("status", "advice"), [(401, "API key"), (404, "model name"), (400, "refused")])
def test_other_statuses_are_errors_that_say_what_to_check(status: int, advice: str) -> None:
    chat = ScriptedChat([Reply(status=status), Reply(content="never asked")])
    with pytest.raises(LLMError, match=advice) as caught:
        ask(chat, max_retries=2)
    assert not isinstance(caught.value, LLMUnavailable) and len(chat.requests) == 1


def test_a_timeout_is_unavailable_and_retried() -> None:
    chat = ScriptedChat([Reply(timeout=True), Reply(timeout=True)])
    with pytest.raises(LLMTimeout, match="timed out after 5s \\(1 retries\\)"):
        ask(chat, max_retries=1)
    assert len(chat.requests) == 2


def test_an_unreachable_server_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    model = OpenAIChatModel(model="m", base_url="http://127.0.0.1:9/v1", max_retries=0,
                            http_client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(LLMUnavailable, match="unreachable") as caught:
        model.complete(MESSAGES)
    assert not isinstance(caught.value, LLMTimeout) and isinstance(caught.value.__cause__, Exception)


@pytest.mark.parametrize(("body", "problem"), [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"choices": "nope"}', "no choices"),
    (b'{"choices": [{"index": 0}]}', "no message"),
    (b'{"choices": [{"message": {"content": ["a", "b"]}}]}', "content is not text"),
    (b'{"choices": [{"message": {"tool_calls": {"a": 1}}}]}', "not a list"),
    (b'{"choices": [{"message": {"tool_calls": [{"type": "custom", "custom": {}}]}}]}', "type 'custom'"),
    (b'{"choices": [{"message": {"tool_calls": [{"type": "function", "function": {}}]}}]}', "without a name"),
    (b'{"choices": [{"message": {"tool_calls": [{"function": {"name": "x", "arguments": 3}}]}}]}', "neither"),
])
def test_nonsense_answers_are_bad_responses(body: bytes, problem: str) -> None:
    with pytest.raises(LLMBadResponse, match=problem):
        ask(ScriptedChat([Reply(body=body)]))


def test_tokens_billed_for_an_unusable_answer_travel_with_the_error() -> None:
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1}}).encode()
    with pytest.raises(LLMBadResponse) as caught:
        ask(ScriptedChat([Reply(body=body)]))
    assert caught.value.usage == TokenUsage(12, 1)


def test_lenient_where_servers_differ() -> None:
    """No usage, no tool call id or type, arguments sent as an object: still a usable answer."""
    reply = parse_reply(json.dumps({"choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "drain_node", "arguments": {"targets": []}}}]}}]}))
    assert reply.usage is None and reply.tool_calls == (ToolCall("call_0", "drain_node", '{"targets": []}'),)


def test_the_fake_answers_only_chat_completions() -> None:
    chat = ScriptedChat([Reply(content="x")])
    with httpx.Client(transport=chat.transport()) as client:
        assert client.get("http://x/v1/models").status_code == 404
        assert client.post("http://x/v1/chat/completions", content=b"{").status_code == 400
        assert client.post("http://x/v1/chat/completions", json={"messages": []}).status_code == 200
    assert chat.requests == [{"messages": []}]
