"""Machine text made readable for the incident page: times as "14:02 UTC (5 min ago)", durations in words,
`key=value` pairs and snake_case names in words, epoch seconds as times, escaped unicode as itself, and a
timeline whose repeated lines fold into one ("×37, last 14:02")."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EPOCH_MIN, EPOCH_MAX = 1e9, 4.1e9  # 2001 .. 2099: a number in this range next to a time-like key is a moment
_PAIR = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)*)=('[^']*'|\"[^\"]*\"|[^\s,;)]+)")
_SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(?:\+00:00|Z)?")
UNITS = {"_s": "s", "_seconds": "s", "_ms": "ms", "_bytes": "bytes", "_percent": "%"}
KEEP_SNAKE = frozenset({"cordon_node", "uncordon_node", "drain_node", "reboot_node", "reset_gpu", "restart_pod",
                        "reschedule_pods", "scale_deployment", "open_hardware_ticket", "notify_only", "taint_node",
                        "gpu_lost", "row_remap", "node_not_ready", "hung_job", "memory_leak",
                        "awaiting_approval"})


def words(name: str) -> str:
    """`row_in_frame` → "row in frame"."""
    return name.replace("_", " ").strip()


def duration(seconds: float) -> str:
    """120 → "2 min", 5400 → "1 h 30 min", 45 → "45 s"."""
    s = abs(float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} days {hours % 24} h" if hours % 24 else f"{hours // 24} days"


def ago(moment: datetime, now: datetime) -> str:
    """"5 min ago", "in 3 min", "just now"."""
    delta = (now - moment).total_seconds()
    if abs(delta) < 30:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(delta)}"


def clock_time(moment: datetime, now: datetime | None = None, *, seconds: bool = False) -> str:
    """"14:02 UTC", with the date when it is not `now`'s day ("3 Dec 14:02 UTC")."""
    moment = moment.astimezone(UTC)
    hm = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
    if now is not None and moment.date() == now.astimezone(UTC).date():
        return f"{hm} UTC"
    return f"{moment.day} {moment.strftime('%b')} {hm} UTC"


def when(moment: datetime | str | None, now: datetime) -> str:
    """"14:02 UTC (5 min ago)", or "" for no moment."""
    if moment is None or moment == "":
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{clock_time(moment, now)} ({ago(moment, now)})"


def value_text(key: str, value: Any, now: datetime | None = None) -> str:
    """One value in words: booleans as yes/no, epoch seconds of a time-like key as a time, units from the key."""
    if isinstance(value, str):
        stripped = value.strip("'\"")
        if stripped in ("True", "False", "true", "false"):
            value = stripped.lower() == "true"
        else:
            try:
                value = float(stripped) if re.fullmatch(r"-?\d+(\.\d+)?(e[+-]?\d+)?", stripped) else stripped
            except ValueError:
                value = stripped
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if EPOCH_MIN <= float(value) <= EPOCH_MAX and _time_like(key):
            moment = datetime.fromtimestamp(float(value), tz=UTC)
            return when(moment, now) if now is not None else clock_time(moment, None, seconds=True)
        number = f"{value:g}" if isinstance(value, float) else str(value)
        for suffix, unit in UNITS.items():
            if key.endswith(suffix):
                return duration(float(value)) if unit == "s" else f"{number} {unit}"
        return number
    if isinstance(value, list | tuple):
        return ", ".join(value_text(key, v, now) for v in value) or "none"
    if isinstance(value, Mapping):
        return mapping_text(value, now)
    return humane(str(value), now)


def _time_like(key: str) -> bool:
    return any(part in key for part in ("seen", "time", "_at", "ts", "since", "until", "when"))


def _key_words(key: str) -> str:
    for suffix in UNITS:
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    return words(key)


def mapping_text(data: Mapping[str, Any], now: datetime | None = None) -> str:
    """{"grace_period_s": 120, "force": False} → "grace period: 2 min; force: no"."""
    return "; ".join(f"{_key_words(str(k))}: {value_text(str(k), v, now)}" for k, v in data.items()
                     if v is not None and v != "")


def humane(text: str, now: datetime | None = None) -> str:
    """Free text made readable: `\\u2192` as →, ISO times without the T, `key=value` pairs in words, other
    snake_case words spaced (runbook and status names stay as written, they are names)."""
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _ISO.sub(lambda m: f"{m.group(1)} {m.group(2)} UTC", text)
    text = _PAIR.sub(lambda m: f"{_key_words(m.group(1))}: {value_text(m.group(1), m.group(2), now)}", text)
    return _SNAKE.sub(lambda m: m.group(0) if m.group(0) in KEEP_SNAKE else words(m.group(0)), text)


def data_text(data: Any, now: datetime | None = None) -> str:
    """Stored JSON (audit data, parameters) in words, never as escaped JSON."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return humane(data, now)
    if isinstance(data, Mapping):
        return mapping_text(data, now)
    return value_text("", data, now)


def collapse(entries: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Timeline entries (oldest first, each with `ts` as ISO text, `source`, `kind`, `message`) with runs of the
    same source, kind and message folded into the first (a finding that repeats anywhere in the timeline, any
    other line when it repeats in a row): `count` and `last_ts`, shown as "×37, last 14:02"."""
    out: list[dict[str, Any]] = []
    findings: dict[tuple[Any, ...], dict[str, Any]] = {}
    for entry in entries:
        key = (entry.get("source"), entry.get("kind"), entry.get("message"))
        same = findings.get(key) if entry.get("source") == "finding" else (
            out[-1] if out and out[-1]["_key"] == key else None)
        if same is not None:
            same["count"] += 1
            same["last_ts"] = entry["ts"]
            continue
        out.append({**entry, "_key": key, "count": 1, "last_ts": entry["ts"]})
        if entry.get("source") == "finding":
            findings[key] = out[-1]
    for item in out:
        item.pop("_key")
        first = datetime.fromisoformat(item["ts"])
        item["when"] = clock_time(first, now, seconds=True)
        item["ago"] = ago(first, now)
        item["repeat"] = (f"×{item['count']}, last {clock_time(datetime.fromisoformat(item['last_ts']), now)}"
                          if item["count"] > 1 else "")
    return out


def drop_echoes(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Timeline entries without the audit trail's echo of a step already on the timeline: an audit entry in the
    same second as another source's entry by the same actor, or with nothing to say, adds nothing for a reader
    (the audit page keeps every one)."""
    said = {(str(e["ts"])[:19], e.get("actor", "")) for e in entries if e.get("source") != "audit"}
    said_any = {str(e["ts"])[:19] for e in entries if e.get("source") != "audit"}
    return [e for e in entries if e.get("source") != "audit" or not (
        (str(e["ts"])[:19], e.get("actor", "")) in said or (not e.get("message") and str(e["ts"])[:19] in said_any))]
