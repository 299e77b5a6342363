"""Incident events to outside channels: PagerDuty's Events API v2 and a generic signed webhook. Each is an
`EventChannel` (send one JSON event, or raise `ChannelUnavailable` / `ChannelRefused`); the in-memory fake
records what it was sent."""

from connectors.paging.errors import ChannelRefused, ChannelUnavailable
from connectors.paging.fake import RecordingChannel
from connectors.paging.pagerduty import PagerDutyEvents
from connectors.paging.port import EventChannel
from connectors.paging.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignedWebhook, signature

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ChannelRefused",
    "ChannelUnavailable",
    "EventChannel",
    "PagerDutyEvents",
    "RecordingChannel",
    "SignedWebhook",
    "signature",
]
