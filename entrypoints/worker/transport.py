"""The Redis transport, with one guard: a queue entry that is not even a JSON message (someone pushed bytes
onto our queue) is dropped with an error and kept in the dead-letter list, instead of stopping the worker
(kombu's own transport lets the decode error escape, and Celery treats it as unrecoverable)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kombu.transport import redis as kombu_redis

from entrypoints.worker.runtime import DEAD_LETTER_LIST

log = logging.getLogger(__name__)


class GuardedChannel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            result: bool = super()._brpop_read(**options)  # type: ignore[no-untyped-call]
            return result
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raw = exc.doc if isinstance(exc, json.JSONDecodeError) else repr(exc.object)
            log.error("dropped an undecodable message from the broker", extra={"error": str(exc)})
            record = {"task": None, "reason": "undecodable", "error": str(exc), "payload": raw[:4000],
                      "at": time.time()}
            try:
                with self.conn_or_acquire() as client:
                    client.lpush(DEAD_LETTER_LIST, json.dumps(record))
            except self.connection_errors:
                log.error("the undecodable message could not be kept: the broker is unavailable")
            return True  # the entry was consumed; go on polling


class Transport(kombu_redis.Transport):
    Channel = GuardedChannel
