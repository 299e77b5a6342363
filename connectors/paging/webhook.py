"""A generic webhook: each event is a JSON POST signed with HMAC-SHA256.

The receiver verifies it like this (the README's "Incident notifications" section says the same):
  1. take the raw request body, the `X-Gpuops-Timestamp` header (Unix seconds) and `X-Gpuops-Signature`
     (`v1=<hex>`);
  2. reject a timestamp more than 5 minutes from its own clock (a replayed request);
  3. compute HMAC-SHA256 with the shared secret over `v1:<timestamp>:<raw body>` and compare the hex digest with
     the header's in constant time.
`X-Gpuops-Delivery` is the same on every retry of one event: a receiver that saw it already can answer 2xx and
ignore it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from connectors.paging.http import post_json

SIGNATURE_HEADER = "X-Gpuops-Signature"
TIMESTAMP_HEADER = "X-Gpuops-Timestamp"
DELIVERY_HEADER = "X-Gpuops-Delivery"
SCHEME = "v1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{SCHEME}:{timestamp}:".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


class SignedWebhook:
    """EventChannel that POSTs each event as JSON to one URL, signed with a shared secret."""

    name = "webhook"

    def __init__(self, *, url: str, secret: str, timeout_s: float = 5.0,
                 transport: httpx.BaseTransport | None = None, clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def send(self, body: dict[str, Any], *, delivery_id: str) -> None:
        content = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(self._clock()))
        headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(self._secret, timestamp, content),
                   DELIVERY_HEADER: delivery_id, "User-Agent": "gpuops"}
        post_json(self._client, self._url, content, headers, what=f"webhook {body.get('event')} {delivery_id}")

    def close(self) -> None:
        self._client.close()
