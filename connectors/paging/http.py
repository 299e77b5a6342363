"""One JSON POST with the channels' shared reading of the answer: 2xx delivered, 429/5xx/network retry later,
any other status refused."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx

from connectors.paging.errors import ChannelRefused, ChannelUnavailable

RETRYABLE = frozenset({408, 425, 429})


def retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Retry-After in seconds (either form RFC 9110 allows), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def post_json(client: httpx.Client, url: str, content: bytes, headers: Mapping[str, str], *,
              what: str) -> httpx.Response:
    """POST `content`; the response when 2xx, else ChannelUnavailable or ChannelRefused (naming `what`)."""
    try:
        response = client.post(url, content=content, headers={"Content-Type": "application/json", **headers})
    except httpx.TimeoutException as exc:
        raise ChannelUnavailable(f"{what}: timed out ({exc}); retrying later") from exc
    except httpx.TransportError as exc:
        raise ChannelUnavailable(f"{what}: unreachable ({exc}); retrying later") from exc
    if response.is_success:
        return response
    detail = response.text[:500].strip()
    if response.status_code in RETRYABLE or response.status_code >= 500:
        raise ChannelUnavailable(f"{what}: answered {response.status_code} {detail}".strip() + "; retrying later",
                                 retry_after_s=retry_after(response.headers))
    raise ChannelRefused(f"{what}: refused with {response.status_code}: {detail or response.reason_phrase}",
                         status=response.status_code, body=response.text)
