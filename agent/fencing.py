"""Tool output as the LLM sees it: bounded in size (summarised when large) and fenced as untrusted data.

Pod names, annotations, labels and log lines are written by whoever runs workloads; they may contain text
that reads like instructions. They reach the model only inside a `<tool_data>` fence whose content cannot
close the fence, and the system prompt says fenced text is data. The model's answer is validated in code
anyway (agent.validation), so fencing lowers the odds; it is not what keeps the fleet safe.
"""

from __future__ import annotations

import json
from typing import Any

MAX_STRING = 240
MAX_ITEMS = 20


def bounded(value: Any, *, max_string: int = MAX_STRING, max_items: int = MAX_ITEMS, depth: int = 0) -> Any:
    """A copy of `value` with long strings cut, long lists and mappings summarised, deep nesting flattened."""
    if depth > 6:
        return "…(nested too deep)"
    if isinstance(value, str):
        return value if len(value) <= max_string else value[:max_string] + f"…(+{len(value) - max_string} chars)"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k)[:max_string]: bounded(v, max_string=max_string, max_items=max_items, depth=depth + 1)
               for k, v in items[:max_items]}
        if len(items) > max_items:
            out["…"] = f"{len(items) - max_items} more keys"
        return out
    if isinstance(value, list | tuple):
        kept = [bounded(v, max_string=max_string, max_items=max_items, depth=depth + 1) for v in value[:max_items]]
        if len(value) > max_items:
            kept.append(f"…{len(value) - max_items} more items")
        return kept
    if isinstance(value, float):
        return round(value, 4)
    if value is None or isinstance(value, bool | int):
        return value
    return bounded(str(value), max_string=max_string, max_items=max_items, depth=depth + 1)


def _json(value: Any) -> str:
    # "<" and ">" become \u escapes: the fenced text can never contain a closing tag.
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e")


def fence(tool: str, status: str, summary: str, data: Any, *, max_chars: int) -> str:
    """The tool result as one fenced block of at most about `max_chars` characters."""
    body = _json({"status": status, "summary": bounded(summary), "data": bounded(data)})
    if len(body) > max_chars:
        body = _json({"status": status, "summary": bounded(summary),
                      "data": bounded(data, max_string=80, max_items=5)})
    if len(body) > max_chars:
        body = _json({"status": status, "summary": bounded(summary),
                      "data": f"…(omitted: {len(body)} chars over the {max_chars}-char limit)"})
    return f'<tool_data tool="{_attr(tool)}" trust="untrusted">\n{body}\n</tool_data>'


def _attr(text: str) -> str:
    return "".join(c for c in text if c.isalnum() or c in "_-")[:64]
