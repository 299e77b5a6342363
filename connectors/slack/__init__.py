"""The Slack port: `SlackPort`, the real adapter `WebApiSlack`, the fake `InMemorySlack`, Block Kit builders for
approval prompts, and the Bolt app that verifies and receives Approve / Reject clicks."""

from connectors.slack.blocks import approval_blocks, progress_text, status_line, summary_text
from connectors.slack.client import WebApiSlack
from connectors.slack.errors import SlackError, SlackUnavailable
from connectors.slack.fake import InMemorySlack
from connectors.slack.models import ApprovalPrompt, ButtonClick, ClickReply, Decision, MessageRef
from connectors.slack.port import SlackPort

__all__ = [
    "ApprovalPrompt",
    "ButtonClick",
    "ClickReply",
    "Decision",
    "InMemorySlack",
    "MessageRef",
    "SlackError",
    "SlackPort",
    "SlackUnavailable",
    "WebApiSlack",
    "approval_blocks",
    "progress_text",
    "status_line",
    "summary_text",
]
