"""The LLM port: one Chat Completions call at a time, over the `openai` SDK, plus a scripted fake."""

from connectors.llm.errors import LLMBadResponse, LLMError, LLMTimeout, LLMUnavailable
from connectors.llm.fake import Reply, ScriptedChat, call
from connectors.llm.openai_adapter import OpenAIChatModel, connect, parse_reply
from connectors.llm.port import ChatModel, ChatReply, TokenUsage, ToolCall

__all__ = [
    "ChatModel",
    "ChatReply",
    "LLMBadResponse",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "OpenAIChatModel",
    "Reply",
    "ScriptedChat",
    "TokenUsage",
    "ToolCall",
    "call",
    "connect",
    "parse_reply",
]
